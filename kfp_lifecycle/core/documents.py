"""The documents the training steps hand each other, typed: one definition each, that the
step writing a document and every step (and test) reading it share.

The model is immutable on its way through the pipeline: `select` passes the chosen
candidate's bundle on untouched, and what later steps decide about it travels beside it as
documents of its own (the leaderboard, the calibration, the explanation, the model card, the
evaluation, the gate's blessing). `register` assembles the registered bundle once, from the
model and those documents (`assembled_metadata`), as TFX keeps a model apart from its
blessing until the pusher. Steps that must judge the model as it will be served (evaluate,
gate, diagnose, explain, report) read it through `served`, the same assembly in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kfp_lifecycle.core.bundle import Bundle
from kfp_lifecycle.core.errors import BundleError

Document = TypeVar("Document", bound=BaseModel)

# The metadata keys each document owns in a registered bundle: one source for the assembly.
LEADERBOARD_KEY = "leaderboard"
CALIBRATION_KEYS = ("calibration", "decision_threshold", "threshold_selection")
EXPLANATION_KEY = "explanation"
MODEL_CARD_KEY = "model_card"


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Parts that do not apply (None) are left out of the JSON rather than written as null.
    omit_absent: ClassVar[bool] = False


class Leaderboard(_Document):
    """select's ranking: every family's validation score on the primary metric, best first."""

    primary_metric: str
    scores: dict[str, float]


class PlattScaling(_Document):
    """Slope and intercept per class (binary: the positive class's) that
    core.bundle.calibrated applies to the model's probabilities."""

    method: Literal["sigmoid"] = "sigmoid"
    slopes: list[float]
    intercepts: list[float]


class Calibration(_Document):
    """The calibrate step's choice: what serving applies on top of the model's own
    probabilities. Nothing set (a regression, or nothing that helps): the model as it is."""

    scaling: PlattScaling | None = None
    decision_threshold: float | None = Field(None, ge=0, le=1)
    threshold_selection: dict[str, Any] | None = None  # the evidence, without the curve

    def metadata(self) -> dict[str, Any]:
        """The bundle metadata keys this calibration sets (those it leaves unset are absent)."""
        values = {
            "calibration": self.scaling.model_dump() if self.scaling else None,
            "decision_threshold": self.decision_threshold,
            "threshold_selection": self.threshold_selection,
        }
        return {key: value for key, value in values.items() if value is not None}


class Explanation(_Document):
    """explain's global feature importance; the model server returns it with `:explain`."""

    omit_absent: ClassVar[bool] = True

    method: str
    budget_cut: str = ""
    metric: str
    permutation_importance: dict[str, float]
    permutation_importance_std: dict[str, float]
    shap_mean_abs: dict[str, float] | None = None


class Evaluation(_Document):
    """evaluate's test-set results, read by the gate, the report and the registry."""

    omit_absent: ClassVar[bool] = True

    rows: int = Field(ge=1)
    task: str
    target: str
    primary_metric: str
    metrics: dict[str, float]
    notes: list[str] = []
    # classifiers
    confusion_matrix: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None  # the reliability curve
    # binary classifiers
    decision_threshold: float | None = None
    roc_curve: dict[str, Any] | None = None
    pr_curve: dict[str, Any] | None = None
    # multiclass: one-vs-rest per class
    roc_curves: dict[str, Any] | None = None
    pr_curves: dict[str, Any] | None = None
    # regression
    predicted_vs_actual: dict[str, list[float]] | None = None


class Check(_Document):
    name: str
    value: float | None  # None: undefined (NaN), which fails any bound
    bound: float | None
    passed: bool


class Baseline(_Document):
    """The champion as scored on the candidate's test rows; `problem` when it could not be."""

    version: int | None
    uri: str
    metrics: dict[str, float] | None
    problem: str = ""


class Blessing(_Document):
    """The gate's decision, written whether or not the model passes."""

    blessed: bool
    reasons: list[str]
    checks: list[Check] = []
    thresholds: dict[str, float] = {}
    baseline: Baseline | None = None
    margin: float | None = None
    primary_metric: str = ""
    measured: dict[str, float] = {}
    overridden: bool = False
    override_reason: str = ""


class Diagnosis(_Document):
    """diagnose's fit verdict with its evidence, curves and advice."""

    verdict: str
    evidence: list[str]
    suggestion: str
    metric: str
    greater_is_better: bool
    baseline_score: float
    skill: dict[str, float]
    rules: dict[str, float]
    learning_curve: dict[str, Any]
    validation_curve: dict[str, Any] | None = None


class BundleMetadata(BaseModel):
    """A bundle's metadata.json: the fields training, serving, drift, rollout, batch scoring
    and export rely on, typed; more (lineage, params, libraries...) is kept as it is."""

    model_config = ConfigDict(extra="allow")

    format_version: int
    sha256: str
    task: str
    target: str
    input_schema: dict[str, Any]
    family: str
    classes: list[Any] | None = None
    primary_metric: str | None = None
    leaderboard: dict[str, float] | None = None
    calibration: PlattScaling | None = None
    decision_threshold: float | None = None
    threshold_selection: dict[str, Any] | None = None
    explanation: Explanation | None = None
    model_card: str | None = None


def assembled_metadata(
    metadata: dict[str, Any],
    leaderboard: Leaderboard | None = None,
    calibration: Calibration | None = None,
    explanation: Explanation | None = None,
    model_card: str | None = None,
) -> dict[str, Any]:
    """The model's metadata with the documents' keys set (a document given replaces what the
    metadata held under its keys), checked against BundleMetadata."""
    merged = dict(metadata)
    if leaderboard is not None:
        merged[LEADERBOARD_KEY] = dict(leaderboard.scores)
    if calibration is not None:
        merged = {k: v for k, v in merged.items() if k not in CALIBRATION_KEYS}
        merged.update(calibration.metadata())
    if explanation is not None:
        merged[EXPLANATION_KEY] = as_dict(explanation)
    if model_card is not None:
        merged[MODEL_CARD_KEY] = model_card
    parse_document(merged, BundleMetadata, "the assembled bundle metadata")
    return merged


def served(
    bundle: Bundle, calibration: Calibration | None, leaderboard: Leaderboard | None = None
) -> Bundle:
    """The bundle as it will be served: the same fitted pipeline, its metadata assembled with
    the calibration (and leaderboard); nothing is written."""
    return Bundle(
        bundle.path, bundle.pipeline, assembled_metadata(bundle.metadata, leaderboard, calibration)
    )


def as_dict(document: BaseModel) -> dict[str, Any]:
    """A document as plain data, as written: NaN stays NaN (a metric can be undefined);
    parts that do not apply are left out where the document says so (omit_absent)."""
    return document.model_dump(exclude_none=getattr(document, "omit_absent", False))


def write_document(path: str | Path, document: BaseModel) -> None:
    Path(path).write_text(json.dumps(as_dict(document), indent=2, default=str))


def read_document(path: str | Path, kind: type[Document]) -> Document:
    """A document written by write_document (or by hand), checked against its type; a bad
    one is a one-line error naming the file and the first field wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: not a readable {kind.__name__} document: {error}") from None
    return parse_document(data, kind, str(path))


def parse_document(data: Any, kind: type[Document], where: str = "") -> Document:
    from pydantic import ValidationError

    try:
        return kind.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise BundleError(
            f"{where or 'document'}: not a valid {kind.__name__}: {field}: {first['msg']}"
        ) from None
