"""Gate: business validation. A model is blessed only if it meets every configured threshold.

Like TFX's Evaluator, the gate refuses to bless when no threshold is configured, and its
decision is an artifact of its own, written whether or not the model passes.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

from kfp.dsl import Artifact, Input, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.errors import LifecycleError
from kfp_lifecycle.tasks import METRICS, metrics_for


@dataclass
class Blessing:
    blessed: bool
    reasons: list[str]
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_thresholds(thresholds: dict[str, float], task: str) -> None:
    unknown = [name for name in thresholds if name not in metrics_for(task)]
    if unknown:
        raise LifecycleError(
            f"gate threshold on unknown metric(s) {', '.join(unknown)} for {task}; "
            f"choose from: {', '.join(metrics_for(task))}"
        )


def decide(metrics: dict[str, float], thresholds: dict[str, float], task: str) -> Blessing:
    """A threshold bounds its metric on the better side: floor for ROC-AUC, ceiling for RMSE."""
    if not thresholds:
        return Blessing(False, ["no threshold configured: the gate blesses no model without one"])
    check_thresholds(thresholds, task)
    reasons, blessed = [], True
    for name, bound in thresholds.items():
        value = metrics[name]
        if METRICS[name].greater_is_better:
            passed, relation = value >= bound, ">="
        else:
            passed, relation = value <= bound, "<="
        verdict = "pass" if passed else "FAIL"
        reasons.append(f"{verdict}: {name} = {value:.4f} (required {relation} {bound})")
        blessed = blessed and passed
    return Blessing(blessed, reasons, dict(thresholds))


@component
def gate(
    evaluation: Input[Artifact], task: str, thresholds: dict, blessing: Output[Artifact]
) -> bool:
    """Bless the champion only if its test metrics meet every threshold.

    Args:
        evaluation: The champion's test-set evaluation.
        task: classification or regression (decides which metrics a threshold may name).
        thresholds: Metric name -> bound, e.g. {"roc_auc": 0.8, "recall": 0.6} or
            {"rmse": 12.5}; a floor for metrics where higher is better, a ceiling otherwise.
            Empty: the gate blesses nothing.
        blessing: JSON decision: blessed, and one reason per threshold.

    Returns:
        Whether the model is blessed.
    """
    import json

    from kfp_lifecycle.components.gate import decide

    with open(evaluation.path) as handle:
        metrics = json.load(handle)["metrics"]
    decision = decide(metrics, {k: float(v) for k, v in thresholds.items()}, task)
    with open(blessing.path, "w") as handle:
        json.dump(decision.to_dict(), handle, indent=2)
    blessing.metadata["blessed"] = decision.blessed
    print(
        ("BLESSED" if decision.blessed else "NOT BLESSED") + "\n  " + "\n  ".join(decision.reasons)
    )
    return decision.blessed
