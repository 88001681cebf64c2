"""The pipeline configuration file: every option of the lifecycle, validated on load.

Each step owns its options (a pydantic model beside the step's code); this file only
composes them, so a step's defaults and descriptions live in one place. A bad key or value
is reported with its dotted path in the file: `split.strategy: Input should be ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from kfp_lifecycle.components.balance import BalanceOptions
from kfp_lifecycle.components.clean import CleanOptions
from kfp_lifecycle.components.diagnose import DiagnoseOptions
from kfp_lifecycle.components.drift import DriftOptions
from kfp_lifecycle.components.evaluate import ThresholdOptions
from kfp_lifecycle.components.explain import ExplainOptions
from kfp_lifecycle.components.features import FeaturesOptions
from kfp_lifecycle.components.gate import GateOptions
from kfp_lifecycle.components.preprocess import PreprocessOptions
from kfp_lifecycle.components.profile import ProfileOptions
from kfp_lifecycle.components.quality import QualityOptions
from kfp_lifecycle.components.report import ReportOptions
from kfp_lifecycle.components.retrain import RetrainRule
from kfp_lifecycle.components.split import SplitOptions
from kfp_lifecycle.components.train import DEFAULT_FAMILIES, FAMILIES
from kfp_lifecycle.components.tune import TuningOptions
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.tasks import METRICS, metrics_for
from kfp_lifecycle.dask_engine.engine import PANDAS, DaskSettings, Engine

AUTO_METRIC = ("auto", "")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    source: str | None = Field(None, description="CSV or Parquet: a path, file:// or s3:// URI.")
    target: str | None = Field(None, description="The column to predict.")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto detects it from the target."
    )
    metric: str = Field("auto", description="Primary metric (auto: roc_auc or rmse).")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str, info: ValidationInfo) -> str:
        """A metric the project computes, and one of the task's when the task is given."""
        task = info.data.get("task", "auto")  # absent when the task itself is invalid
        valid = list(METRICS) if task == "auto" else metrics_for(task)
        if metric in AUTO_METRIC or metric in valid:
            return metric
        problem = f"does not apply to {task}" if metric in METRICS else "is unknown"
        raise _invalid(f"metric '{metric}' {problem}; valid: auto, {', '.join(valid)}")


class ModelsConfig(Section):
    families: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FAMILIES),
        description="Model families trained in parallel; the best on validation wins.",
    )
    tuning: TuningOptions = Field(default_factory=TuningOptions)

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        unknown = [family for family in families if family not in FAMILIES]
        if unknown:
            raise _invalid(
                f"unknown model famil{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; valid: {', '.join(FAMILIES)}"
            )
        if not families:
            raise _invalid(f"name at least one model family; valid: {', '.join(FAMILIES)}")
        repeated = sorted({family for family in families if families.count(family) > 1})
        if repeated:
            raise _invalid(f"repeated model family: {', '.join(repeated)}")
        return families


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error," prefix)."""
    return PydanticCustomError("invalid_name", "{message}", {"message": message})


class MonitoringConfig(Section):
    log_uri: str | None = Field(
        None, description="The model server's request log: a directory or s3:// prefix."
    )
    labels_uri: str = Field(
        "", description="Labels that arrived later (request_id, target): CSV or Parquet."
    )
    window_days: int = Field(1, ge=1, description="Days of logged requests per run.")
    pushgateway: str = Field(
        "", description="Prometheus Pushgateway URL for drift and quality gauges."
    )
    deploy: bool = Field(
        False, description="After retraining, run the deployment pipeline (a cluster only)."
    )
    service_name: str = Field("", description="InferenceService to deploy to (with deploy).")
    drift: DriftOptions = Field(default_factory=DriftOptions)
    quality: QualityOptions = Field(default_factory=QualityOptions)
    retrain: RetrainRule = Field(default_factory=RetrainRule)


class LifecycleConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model_name: str | None = Field(None, description="Registered model name (default: target).")
    registry: str | None = Field(None, description="Registry: a directory or s3:// URI.")
    output: str = Field("lifecycle-output", description="Local run's output directory.")
    engine: Engine = Field(
        PANDAS,
        description="Data stage and training engine: pandas, dask, or auto (dask from "
        "AUTO_DASK_ROWS rows or AUTO_DASK_BYTES of files; kfp_lifecycle/dask_engine/engine.py).",
    )
    dask: DaskSettings = Field(default_factory=DaskSettings)
    profile: ProfileOptions = Field(default_factory=ProfileOptions)
    cleaning: CleanOptions = Field(default_factory=CleanOptions)
    split: SplitOptions = Field(default_factory=SplitOptions)
    preprocessing: PreprocessOptions = Field(default_factory=PreprocessOptions)
    features: FeaturesOptions = Field(default_factory=FeaturesOptions)
    imbalance: BalanceOptions = Field(default_factory=BalanceOptions)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    decision_threshold: ThresholdOptions = Field(default_factory=ThresholdOptions)
    gate: GateOptions = Field(default_factory=GateOptions)
    diagnosis: DiagnoseOptions = Field(default_factory=DiagnoseOptions)
    explanation: ExplainOptions = Field(default_factory=ExplainOptions)
    report: ReportOptions = Field(default_factory=ReportOptions)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)


def describe_errors(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key and the value given."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        given = problem.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"{source}: {key}: {problem['msg']}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> LifecycleConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LifecycleError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return LifecycleConfig.model_validate(data)
    except ValidationError as error:
        raise LifecycleError(describe_errors(error, source)) from None


def load_config(path: str | Path) -> LifecycleConfig:
    path = Path(path)
    if not path.is_file():
        raise LifecycleError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise LifecycleError(f"{path} is not valid YAML: {error}") from None
    return parse_config(data, str(path))


def with_overrides(config: LifecycleConfig, overrides: dict[str, Any]) -> LifecycleConfig:
    """Apply dotted-key overrides (from command-line flags) and validate the result again."""
    data = config.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, "command line")


def reference_yaml() -> str:
    """Every option with its default and description: examples/reference.yaml (`make compile`)."""
    lines = [
        "# Every option of the lifecycle with its default and what it does. Generated from the",
        "# steps' option models by `make compile`; do not edit by hand. Copy what you need.",
        "",
    ]

    def emit(model: type[BaseModel], values: dict[str, Any], depth: int) -> None:
        for name, field in model.model_fields.items():
            comment = f"  # {field.description}" if field.description else ""
            nested = field.annotation if isinstance(values[name], dict) else None
            if nested is not None and hasattr(nested, "model_fields"):
                lines.append(f"{'  ' * depth}{name}:{comment}")
                emit(nested, values[name], depth + 1)
                continue
            value = yaml.safe_dump(values[name], default_flow_style=True).strip()
            value = value.removesuffix("...").strip()
            lines.append(f"{'  ' * depth}{name}: {value}{comment}")

    emit(LifecycleConfig, LifecycleConfig().model_dump(mode="json"), 0)
    return "\n".join(lines) + "\n"
