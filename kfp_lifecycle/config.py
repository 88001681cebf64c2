"""The pipeline configuration file: every option of the lifecycle, validated on load.

Each step owns its options (a pydantic model beside the step's code); this file only
composes them, so a step's defaults and descriptions live in one place. A bad key or value
is reported with its dotted path in the file: `split.strategy: Input should be ...`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kfp_lifecycle.budget import DEFAULT_TIME_BUDGET
from kfp_lifecycle.components.balance import BalanceOptions
from kfp_lifecycle.components.calibrate import CalibrateOptions
from kfp_lifecycle.components.clean import CleanOptions
from kfp_lifecycle.components.diagnose import DiagnoseOptions
from kfp_lifecycle.components.drift import DriftOptions
from kfp_lifecycle.components.explain import ExplainOptions
from kfp_lifecycle.components.features import FeaturesOptions
from kfp_lifecycle.components.gate import GateOptions
from kfp_lifecycle.components.preprocess import PreprocessOptions
from kfp_lifecycle.components.profile import ProfileOptions
from kfp_lifecycle.components.quality import QualityOptions
from kfp_lifecycle.components.report import ReportOptions
from kfp_lifecycle.components.retrain import RetrainRule
from kfp_lifecycle.components.split import SplitOptions
from kfp_lifecycle.components.tune import TuneOptions
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.tasks import METRICS, metrics_for
from kfp_lifecycle.dask_engine.engine import PANDAS, DaskSettings, Engine
from kfp_lifecycle.families import DEFAULT_FAMILIES, FAMILIES
from kfp_lifecycle.sources.sql import SqlOptions

AUTO_METRIC = ("auto", "")
log = logging.getLogger(__name__)

# Config keys renamed so that a step has one name everywhere (its module, component, config
# section and `<step>_options` pipeline parameter): old dotted key -> new. The old keys are
# still read, with a warning, until the next release.
RENAMED_KEYS: dict[str, str] = {
    "cleaning": "clean",
    "preprocessing": "preprocess",
    "imbalance": "balance",
    "diagnosis": "diagnose",
    "explanation": "explain",
    "decision_threshold": "calibrate",
    "models.tuning": "models.tune",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    source: str | None = Field(
        None,
        description="CSV or Parquet (a path, file:// or s3:// URI) or a database URL without "
        "password (postgresql://host/db?table=events, sqlite:///file.db?table=t).",
    )
    target: str | None = Field(None, description="The column to predict.")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto detects it from the target."
    )
    metric: str = Field("auto", description="Primary metric (auto: roc_auc or rmse).")
    positive_class: str = Field(
        "",
        description="Binary classification: the class F1, precision, recall and the decision "
        "threshold are about (as text); empty: the minority class.",
    )
    sql: SqlOptions = Field(
        default_factory=SqlOptions, description="For a database source: what and which rows."
    )

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
        description="Model families trained in parallel; the best on validation wins. Known: "
        + ", ".join(FAMILIES),
    )
    tune: TuneOptions = Field(default_factory=TuneOptions)

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


def _rename_deprecated(data: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    """`data` with each old key of `renamed` moved to its new name, warning once per key."""
    data = dict(data)
    for old, new in renamed.items():
        *old_parents, old_leaf = old.split(".")
        new_leaf = new.rpartition(".")[2]  # renamed within the same parent section
        node = data
        for part in old_parents:
            if not isinstance(node.get(part), dict):
                break
            node[part] = node = dict(node[part])
        else:
            if old_leaf not in node:
                continue
            if new_leaf in node:
                raise _invalid(f"both '{old}' (deprecated) and '{new}' are set; keep '{new}'")
            node[new_leaf] = node.pop(old_leaf)
            message = f"config key '{old}' is deprecated: use '{new}' (removed in the next release)"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            log.warning(message)
    return data


class LifecycleConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model_name: str | None = Field(None, description="Registered model name (default: target).")
    registry: str | None = Field(None, description="Registry: a directory or s3:// URI.")
    output: str = Field("lifecycle-output", description="Local run's output directory.")
    time_budget: float = Field(
        DEFAULT_TIME_BUDGET,
        ge=0,
        description="Seconds for a whole training run, shared by tuning, diagnosis and "
        "explanation (kfp_lifecycle/budget.py); each cuts its work to fit and says so. "
        "0: no budget (tuning's own timeout_seconds still applies).",
    )
    engine: Engine = Field(
        PANDAS,
        description="Data stage and training engine: pandas, dask, or auto (dask from "
        "AUTO_DASK_ROWS rows or AUTO_DASK_BYTES of files; kfp_lifecycle/dask_engine/engine.py).",
    )
    dask: DaskSettings = Field(default_factory=DaskSettings)
    profile: ProfileOptions = Field(default_factory=ProfileOptions)
    clean: CleanOptions = Field(default_factory=CleanOptions)
    split: SplitOptions = Field(default_factory=SplitOptions)
    preprocess: PreprocessOptions = Field(default_factory=PreprocessOptions)
    features: FeaturesOptions = Field(default_factory=FeaturesOptions)
    balance: BalanceOptions = Field(default_factory=BalanceOptions)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    calibrate: CalibrateOptions = Field(default_factory=CalibrateOptions)
    gate: GateOptions = Field(default_factory=GateOptions)
    diagnose: DiagnoseOptions = Field(default_factory=DiagnoseOptions)
    explain: ExplainOptions = Field(default_factory=ExplainOptions)
    report: ReportOptions = Field(default_factory=ReportOptions)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    onnx_export: bool = Field(
        True,
        description="Export the registered model as one ONNX model (model.onnx), checked "
        "against the bundle; a model that cannot be exported is recorded, not a failure.",
    )

    @model_validator(mode="before")
    @classmethod
    def _deprecated_keys(cls, data: Any) -> Any:
        """Read the old names of renamed sections (RENAMED_KEYS) for one more release."""
        return _rename_deprecated(data, RENAMED_KEYS) if isinstance(data, dict) else data


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
