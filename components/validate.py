"""Validate: refuse data that cannot train a model, and settle the task and primary metric."""

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
from kfp.dsl import Artifact, Dataset, Input, Output

from kfp_lifecycle.component import component
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import (
    CATEGORICAL,
    CONSTANT,
    DATETIME,
    ID_LIKE,
    NUMERIC,
    infer_kind,
    infinite_counts,
    plain,
    unusable_column,
)
from kfp_lifecycle.core.tasks import (
    CLASSIFICATION,
    MAX_CLASSES_FOR_INTEGER_TARGET,
    resolve_metric,
    resolve_task,
)

logger = logging.getLogger(__name__)

# Stratified train/validation/test needs every class on each side.
MIN_ROWS_PER_CLASS = 3
# Rare classes named in the error; a continuous target has hundreds.
MAX_LISTED_CLASSES = 5


@dataclass
class ValidationResult:
    task: str
    primary_metric: str
    warnings: list[str] = field(default_factory=list)
    # binary classification: the class the threshold, F1, precision and recall are about
    positive_class: str | int | float | bool | None = None


def validate_table(
    frame: pd.DataFrame,
    target: str,
    task: str = "auto",
    metric: str = "auto",
    positive_class: str = "",
) -> ValidationResult:
    """Raise DataError naming the problem; return the resolved task, metric and warnings."""
    if frame.empty:
        raise DataError("the table has no rows")
    if target not in frame.columns:
        raise DataError(
            f"target column '{target}' not found; columns are: {', '.join(map(str, frame.columns))}"
        )
    if frame.shape[1] < 2:
        raise DataError(
            f"the table has only the target column '{target}'; no features to learn from"
        )
    empty = [str(c) for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise DataError(f"column(s) entirely null: {', '.join(empty)}")

    labels = frame[target]
    warnings = []
    missing_labels = int(labels.isna().sum())
    if missing_labels:
        warnings.append(
            f"target '{target}' is missing in {missing_labels} row(s); "
            "they are left out of training"
        )
        labels = labels.dropna()
    if labels.nunique() < 2:
        raise DataError(
            f"target '{target}' is constant ({plain(labels.iloc[0])!r}); "
            "a model needs at least two values"
        )

    resolved_task = resolve_task(task, labels)
    if resolved_task == CLASSIFICATION:
        check_class_sizes(labels, target)
    positive = positive_class_for(resolved_task, labels.value_counts(), target, positive_class)
    warnings += column_warnings(frame, target)
    metric = resolve_metric(metric, resolved_task)
    return ValidationResult(resolved_task, metric, warnings, positive)


def resolve_positive_class(labels: pd.Series, target: str, configured: str = "") -> object:
    """A binary task's positive class from its labels (positive_class_for)."""
    return positive_class_for(CLASSIFICATION, labels.value_counts(), target, configured)


def positive_class_for(task: str, counts: pd.Series, target: str, configured: str = "") -> object:
    """A binary task's positive class from the rows per class (`counts`, so the Dask engine
    can count them partition-wise): the configured one (matched as text), else the minority
    class, so that F1, precision, recall and the decision threshold are about the rare
    outcome (a default on the majority is won by predicting it for every row); equal
    counts: the larger label. Multiclass or regression: None (configured, an error)."""
    if task != CLASSIFICATION:
        if configured:
            raise DataError(f"positive_class '{configured}' is set, but the task is {task}")
        return None
    values = sorted(counts.index.tolist())
    if len(values) != 2:
        if configured:
            raise DataError(
                f"positive_class '{configured}' applies to a binary target; '{target}' has "
                f"{len(values)} classes"
            )
        return None
    if configured:
        matched = [v for v in values if str(plain(v)) == configured]
        if not matched:
            shown = ", ".join(repr(plain(v)) for v in values)
            raise DataError(f"positive_class '{configured}' is not a class of '{target}' ({shown})")
        return plain(matched[0])
    low, high = values
    return plain(low if counts[low] < counts[high] else high)


def check_class_sizes(labels: pd.Series, target: str) -> None:
    """Refuse classes too small to stratify, naming a few; a numeric target with many
    values was most likely meant as regression, and the error says so."""
    check_class_counts(labels.value_counts(), pd.api.types.is_numeric_dtype(labels), target)


def check_class_counts(counts: pd.Series, numeric: bool, target: str) -> None:
    """check_class_sizes from rows per class (the Dask engine counts them partition-wise)."""
    rare = counts[counts < MIN_ROWS_PER_CLASS]
    if rare.empty:
        return
    listed = ", ".join(
        f"{plain(label)!r} ({n})" for label, n in rare.head(MAX_LISTED_CLASSES).items()
    )
    if len(rare) > MAX_LISTED_CLASSES:
        listed += f" and {len(rare) - MAX_LISTED_CLASSES} more"
    if numeric and len(counts) > MAX_CLASSES_FOR_INTEGER_TARGET:
        advice = (
            f"'{target}' looks numeric and continuous ({len(counts)} distinct values): "
            "use --task regression"
        )
    else:
        advice = "a stratified split needs more examples, or use --task regression"
    raise DataError(
        f"{len(rare)} class(es) of '{target}' with fewer than {MIN_ROWS_PER_CLASS} rows: "
        f"{listed}; {advice}"
    )


# --- the data contract -------------------------------------------------------------------
# Inferred from the first training table, kept in the bundle's metadata ("contract"), and
# checked (with pandera) against every later table: an error stops the run, a warning is
# reported. Values may stray a little past the training range before it is worth a warning.
RANGE_MARGIN = 0.1
NULL_RATE_INCREASE = 0.1
# A categorical column with more distinct values than this keeps no list of allowed
# categories: new values are normal there (cities, products), and preprocessing groups them.
MAX_CONTRACT_CATEGORIES = 1000
ERROR, WARNING = "error", "warning"


@dataclass
class Finding:
    severity: str
    column: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: '{self.column}' {self.check}: {self.message}"


def infer_contract(frame: pd.DataFrame, target: str) -> dict:
    """Types, ranges, allowed categories, null rates and uniqueness of the training table."""
    columns = {}
    for name in frame.columns:
        values = frame[name]
        kind = infer_kind(values)
        spec = {
            "kind": kind,
            "null_rate": round(float(values.isna().mean()), 6),
            "unique": bool(values.dropna().is_unique and values.notna().sum() > 1),
        }
        present = values.dropna()
        if kind == NUMERIC and len(present):
            spec.update(min=float(present.min()), max=float(present.max()))
        if kind == CATEGORICAL:
            categories = present.astype(str).unique()
            if len(categories) <= MAX_CONTRACT_CATEGORIES:
                spec["categories"] = sorted(categories.tolist())
            else:
                spec["distinct"] = len(categories)
        columns[str(name)] = spec
    return {"target": target, "rows": len(frame), "columns": columns}


def model_contract(contract: dict, inputs: list[str]) -> dict:
    """The contract as kept with a trained model: the model's input columns and the target
    are required; every other column (an ID, a constant, anything preprocessing dropped) is
    recorded as `required: false` with its kind alone, so a later table (a retraining window
    assembled from the request log, which logs only the inputs) may lack it."""
    needed = {*inputs, contract["target"]}
    columns = {}
    for name, spec in contract["columns"].items():
        if name in needed:
            columns[name] = {**spec, "required": True}
        else:
            columns[name] = {"kind": spec["kind"], "required": False}
    return {**contract, "columns": columns}


def required_columns(contract: dict) -> dict[str, dict]:
    """The contract's columns a table must have (a contract from before `required` was
    recorded requires them all)."""
    return {n: s for n, s in contract["columns"].items() if s.get("required", True)}


def check_contract(frame: pd.DataFrame, contract: dict) -> list[Finding]:
    """Every way the table breaks the contract's required columns; pandera runs the value
    checks."""
    import pandera.pandas as pa

    findings: list[Finding] = []
    checks: dict[str, pa.Column] = {}
    for name, spec in required_columns(contract).items():
        if name not in frame.columns:
            findings.append(Finding(ERROR, name, "present", "the column is missing"))
            continue
        values = frame[name]
        kind = infer_kind(values) if values.notna().any() else spec["kind"]
        if kind != spec["kind"] and not (spec["kind"] == NUMERIC and kind == "boolean"):
            findings.append(
                Finding(ERROR, name, "type", f"was {spec['kind']} in training, is now {kind}")
            )
            continue
        null_rate = float(values.isna().mean())
        if null_rate > spec["null_rate"] + NULL_RATE_INCREASE:
            findings.append(
                Finding(
                    WARNING, name, "null rate",
                    f"{null_rate:.1%} missing, {spec['null_rate']:.1%} in training",
                )
            )  # fmt: skip
        if spec["unique"] and not values.dropna().is_unique:
            findings.append(Finding(WARNING, name, "unique", "values repeat; in training none did"))
        if kind == NUMERIC and "min" in spec:
            margin = RANGE_MARGIN * (spec["max"] - spec["min"] or 1.0)
            low, high = spec["min"] - margin, spec["max"] + margin
            checks[name] = pa.Column(checks=pa.Check.in_range(low, high), nullable=True)
        elif kind == CATEGORICAL and spec.get("categories"):
            checks[name] = pa.Column(checks=pa.Check.isin(spec["categories"]), nullable=True)
    if checks:
        columns = list(checks)
        table = frame[columns].copy()
        for name in columns:
            if contract["columns"][name]["kind"] == CATEGORICAL:
                table[name] = table[name].map(lambda v: v if pd.isna(v) else str(v))
        try:
            pa.DataFrameSchema(checks).validate(table, lazy=True)
        except pa.errors.SchemaErrors as errors:
            cases = errors.failure_cases
            for name, group in cases.groupby("column"):
                examples = group["failure_case"].drop_duplicates().head(3)
                shown = ", ".join(_example(plain(v)) for v in examples)
                numeric = contract["columns"][name]["kind"] == NUMERIC
                what = "outside the training range" if numeric else "categories training never saw"
                findings.append(
                    Finding(WARNING, str(name), what, f"{len(group)} row(s), e.g. {shown}")
                )
    return findings


def _example(value: object) -> str:
    """A failing value as people read it: 50.83, not 50.830000000000005 (12 significant
    digits are beyond any measurement, and below float noise); text quoted."""
    return repr(float(f"{value:.12g}")) if isinstance(value, float) else repr(value)


def check_new_data(frame: pd.DataFrame, contract: dict | None, inputs: list[str]) -> list[Finding]:
    """New data for the model (requests, a batch to score) against its training contract:
    only the model's input columns count (new data has no target). Every finding is
    reported; none stops anything, since the data is already there."""
    if not contract:
        return []
    kept = {name: spec for name, spec in contract["columns"].items() if name in inputs}
    return check_contract(frame, {**contract, "columns": kept})


def column_warnings(frame: pd.DataFrame, target: str) -> list[str]:
    """What preprocessing will do, said out loud: constant and ID-like columns (by the rule
    preprocessing drops them by), mixed-type columns, dates given as text, infinities."""
    warnings = [
        f"column '{name}' has {count} infinite value(s) (inf/-inf): treated as missing"
        for name, count in infinite_counts(frame).items()
    ]
    for name in frame.columns:
        if name == target or frame[name].isna().all():  # all-null is an error already
            continue
        kind = infer_kind(frame[name])
        unusable = unusable_column(frame[name], kind)
        if unusable is not None and unusable.rule == CONSTANT:
            warnings.append(
                f"column '{name}' is {unusable}: no information, dropped by preprocessing"
            )
            continue
        values = frame[name].dropna()
        textual = not pd.api.types.is_numeric_dtype(values)
        if kind == DATETIME and textual:
            warnings.append(f"column '{name}' holds date-times as text: parsed as dates")
        elif textual:
            as_numbers = pd.to_numeric(values.astype(str), errors="coerce")
            share = float(as_numbers.notna().mean())
            if 0.05 < share < 0.95:
                examples = values[as_numbers.isna()].astype(str).unique()[:3].tolist()
                warnings.append(
                    f"column '{name}' mixes numbers ({share:.0%}) and text (e.g. {examples}): "
                    "treated as categories"
                )
        if unusable is not None and unusable.rule == ID_LIKE:
            warnings.append(
                f"column '{name}' looks like an identifier, {unusable}: it cannot generalise "
                "to new rows, dropped by preprocessing"
            )
    return warnings


def champion_contract(registry: str, model_name: str) -> dict | None:
    """The contract kept with the registry's current champion, if there is one."""
    if not registry or not model_name:
        return None
    from kfp_lifecycle.registry import CHAMPION, open_registry

    store = open_registry(registry)
    champion = store.alias(model_name, CHAMPION)
    return (
        None if champion is None else store.metadata(model_name, champion.version).get("contract")
    )


def enforce_contract(frame: pd.DataFrame, contract: dict | None) -> list[Finding]:
    """Raise on the contract's errors (naming each); return its warnings."""
    if contract is None:
        return []
    findings = check_contract(frame, contract)
    errors = [str(f) for f in findings if f.severity == ERROR]
    if errors:
        raise DataError("the data breaks the champion's data contract: " + "; ".join(errors))
    return findings


@component
def validate(
    dataset: Input[Dataset],
    target: str,
    report: Output[Artifact],
    contract: Output[Artifact],
    task: str = "auto",
    metric: str = "auto",
    registry: str = "",
    model_name: str = "",
    positive_class: str = "",
    engine: str = "pandas",
    dask_options: dict = {},  # noqa: B006
    dask_scheduler: str = "",
) -> NamedTuple("ValidateOutputs", task=str, primary_metric=str):
    """Check the table can train a model and resolve the task and primary metric.

    Args:
        dataset: The ingested table.
        target: Name of the column to predict.
        report: JSON with the resolved task, primary metric and warnings. Steps inside a
            ParallelFor read it instead of the parameters below (kfp.local 2.17 replaces
            upstream task outputs passed into a loop with the loop item).
        contract: JSON data contract inferred from this table, kept with the new model.
        task: classification, regression, or auto (detected from the target).
        metric: Primary metric used to select the best family, or auto (ROC-AUC / RMSE).
        registry: Model registry; when it has a champion of model_name, the table is
            checked against that champion's contract (errors stop the run).
        model_name: Registered model name.
        positive_class: A binary task's positive class (as text); empty: the minority class.
            The report carries the resolved one to training.
        engine: pandas, dask, or auto (dask from a size: kfp_lifecycle/dask_engine/engine.py).
        dask_options: DaskSettings (dask_engine/engine.py): scheduler_address (else a
            LocalCluster per step), n_workers, memory_per_worker, sample_rows.
        dask_scheduler: tcp://host:8786 of a running Dask scheduler, e.g. the training-dask
            pipeline's cluster step's output; overrides dask_options' scheduler_address.
            Empty: that, else the DASK_SCHEDULER_ADDRESS variable, else a LocalCluster.

    Returns:
        task: The resolved task.
        primary_metric: The resolved primary metric.
    """
    import json
    from dataclasses import asdict

    import pandas as pd

    from kfp_lifecycle.components.validate import (
        champion_contract,
        enforce_contract,
        infer_contract,
        logger,
        validate_table,
    )
    from kfp_lifecycle.dask_engine.steps import uses_dask

    if uses_dask(engine, dataset.path):
        from kfp_lifecycle.dask_engine import steps

        result, findings, inferred = steps.validate(
            dataset.path, target, task, metric, registry, model_name, dask_options,
            dask_scheduler, positive_class,
        )  # fmt: skip
    else:
        frame = pd.read_parquet(dataset.path)
        result = validate_table(frame, target, task, metric, positive_class)
        findings = enforce_contract(frame, champion_contract(registry, model_name))
        inferred = infer_contract(frame, target)
    with open(report.path, "w") as handle:
        json.dump({**asdict(result), "findings": [asdict(f) for f in findings]}, handle, indent=2)
    with open(contract.path, "w") as handle:
        json.dump(inferred, handle, indent=2)
    for warning in [*result.warnings, *map(str, findings)]:
        logger.warning(warning)
    logger.info(f"task: {result.task}, primary metric: {result.primary_metric}")
    return (result.task, result.primary_metric)
