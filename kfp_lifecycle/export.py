"""Export: a model bundle as one ONNX model (preprocessing + estimator), checked against it.

The ONNX model runs without Python (plain onnxruntime, on a device, or KServe's ONNX
runtime). It takes one input per schema column, [rows, 1] each, typed as the coerced
column is:

    numeric, boolean   double   (NaN = missing; +-inf read as the bundle's coercer reads it)
    categorical        string   ("" = missing)
    datetime           int64    nanoseconds since 1970-01-01 UTC (int64 min = missing, NaT)

and answers `label` (the bundle's classes; for two classes its decision threshold) and
`probabilities`, or `variable` (regression).

The preprocessing is converted by skl2onnx with this project's converters
(kfp_lifecycle.onnx_steps), the estimator apart, each in the precision its library computes
in: linear models by skl2onnx in double, forests, histogram boosting and LightGBM as double
TreeEnsembles (kfp_lifecycle.onnx_trees), XGBoost by onnxmltools in float32 as XGBoost
itself; then the two graphs are joined. A step nothing converts stops the export with one
line naming it: never a wrong model.

The model is checked with onnxruntime against the bundle on the rows kept with it (its
reference sample; the training pipeline passes its test rows) and kept only within
TOLERANCE (see Parity). This module is imported by the CLI and the training pipeline's
export step, never by the model server.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from kfp_lifecycle.core.bundle import DEFAULT_DECISION_THRESHOLD, Bundle
from kfp_lifecycle.core.schema import (
    BOOLEAN,
    CATEGORICAL,
    DATETIME,
    NUMERIC,
    Columns,
    InputSchema,
)
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.onnx_steps import (
    IR_VERSION,
    MISSING_TEXT,
    MISSING_TIME,
    TARGET_OPSET,
    ExportError,
    check_convertible,
    exportable_pipeline,
    onnx_input_types,
    register_converters,
)
from kfp_lifecycle.onnx_trees import TREE_ESTIMATORS, Graph, tree_model

FORMATS = ("onnx",)
ONNX_FILE = "model.onnx"
REPORT_JSON = "onnx-report.json"
REPORT_MD = "onnx-report.md"
TOLERANCE = 1e-4
PLURALS = {"probability": "probabilities", "prediction": "predictions"}
ONNX_LIBRARIES = ("onnx", "onnxruntime", "skl2onnx", "onnxmltools")


# The ONNX inputs and the feed that matches them.


def onnx_feed(frame: pd.DataFrame, schema: InputSchema) -> dict[str, np.ndarray]:
    """Raw feature rows as the ONNX model's inputs (what an edge caller must send)."""
    coerced = schema.coerce(frame)
    return columns_feed({name: coerced[name].to_numpy() for name in schema.names}, schema)


def columns_feed(columns: Columns, schema: InputSchema) -> dict[str, np.ndarray]:
    """Request columns (`InputSchema.records_to_columns`) as the ONNX model's inputs."""
    feed = {}
    for column in schema.columns:
        values = columns[column.name]
        if column.kind == CATEGORICAL:
            array = np.array([MISSING_TEXT if v is None else v for v in values], dtype=object)
        elif column.kind == DATETIME:
            array = np.asarray(values, dtype="datetime64[ns]").astype(np.int64)
        else:
            array = np.asarray(values, dtype=np.float64)
        feed[column.name] = array.reshape(-1, 1)
    return feed


# Conversion, check and report.


def convert_bundle(bundle: Bundle) -> Any:
    """The bundle's whole pipeline as an onnx.ModelProto (raises ExportError, one line).

    The preprocessing and the estimator are converted apart and joined: each in the
    precision its library computes in (double; float32 for XGBoost).
    """
    require_onnx()
    pipeline, schema = exportable_pipeline(bundle.pipeline)
    schema = schema or bundle.schema
    *preprocessing, (_, estimator) = pipeline.steps
    if not preprocessing:
        raise ExportError("cannot export a pipeline without preprocessing before its estimator")
    task = bundle.metadata["task"]
    width = int(getattr(estimator, "n_features_in_", 0))
    front = _converted(
        type(estimator).__name__,
        lambda: _skl2onnx(Pipeline(preprocessing), onnx_input_types(schema), None),
    )
    back, dtype = _converted(
        type(estimator).__name__, lambda: _estimator_model(estimator, task, width)
    )
    model = _join(front, back, dtype, bundle.metadata)
    model.doc_string = json.dumps(_model_notes(bundle, schema))
    return model


def require_onnx() -> None:
    """Fail in one line when the onnx extra is not installed."""
    import importlib

    missing = []
    for name in ONNX_LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}: pip install 'kfp-lifecycle[onnx]'"
        )


def _converted(what: str, convert: Any) -> Any:
    try:
        return convert()
    except ExportError:
        raise
    except Exception as error:  # a converter's own failure, reported as one line
        text = str(error).strip()
        first = text.splitlines()[0] if text else ""
        raise ExportError(
            f"converting the {what} pipeline to ONNX failed: {type(error).__name__}: {first[:300]}"
        ) from None


def _skl2onnx(model: Any, initial_types: list[Any], options: dict | None) -> Any:
    from skl2onnx import convert_sklearn

    register_converters()
    return convert_sklearn(
        model, initial_types=initial_types, options=options, target_opset=TARGET_OPSET
    )


FLOAT32_ESTIMATORS = ("XGBClassifier", "XGBRegressor")


def _estimator_model(estimator: Any, task: str, width: int) -> tuple[Any, Any]:
    """The estimator alone as ONNX over a [rows, width] `features` input, and that input's
    numpy type. Outputs: label, probabilities (classification) or variable (regression)."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    kind = type(estimator).__name__
    if kind in TREE_ESTIMATORS:
        return tree_model(estimator, task, width), np.float64
    options = {id(estimator): {"zipmap": False}} if task == CLASSIFICATION else None
    if kind in FLOAT32_ESTIMATORS:
        types = [("features", FloatTensorType([None, width]))]
        return _skl2onnx(estimator, types, options), np.float32
    check_convertible([("model", estimator)])
    types = [("features", DoubleTensorType([None, width]))]
    return _skl2onnx(estimator, types, options), np.float64


def _join(front: Any, back: Any, dtype: Any, metadata: dict[str, Any]) -> Any:
    """One model: the preprocessing's output cast to the estimator's input type, then the
    estimator; its scores as double, and the bundle's own labels (its classes, its decision
    threshold for two classes) computed from them."""
    import onnx
    from onnx import TensorProto, compose, helper

    front = compose.add_prefix(front, "preprocess/", rename_inputs=False)
    back = compose.add_prefix(back, "estimator/")
    (features,) = [output.name for output in front.graph.output]
    (estimator_input,) = [i.name for i in back.graph.input]
    to = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes = [*front.graph.node, helper.make_node("Cast", [features], [estimator_input], to=to)]
    nodes += back.graph.node
    initializers = [*front.graph.initializer, *back.graph.initializer]
    scores = back.graph.output[-1].name  # probabilities (after the label), or the prediction
    tail = Graph(prefix="bundle/")
    if metadata["task"] != CLASSIFICATION:
        tail.op("Cast", scores, output="variable", to=TensorProto.DOUBLE)
        outputs = [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])]
    else:
        classes = metadata["classes"]
        raw = tail.op("Cast", scores, to=TensorProto.DOUBLE)
        probabilities = _calibrated(tail, raw, len(classes), metadata.get("calibration"))
        tail.op("Identity", probabilities, output="probabilities")
        if len(classes) == 2:
            threshold = metadata.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)
            positive = tail.op("Gather", probabilities, tail.const(1, np.int64), axis=1)
            over = tail.op("GreaterOrEqual", positive, tail.const(threshold))
            index = tail.op("Cast", over, to=TensorProto.INT64)
        else:
            index = tail.op("ArgMax", probabilities, axis=1, keepdims=0)
        numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
        if numeric:
            table, elem = tail.const(classes, np.int64), TensorProto.INT64
        else:
            table, elem = tail.const([str(c) for c in classes], object), TensorProto.STRING
        tail.op("Gather", table, index, output="label", axis=0)
        outputs = [
            helper.make_tensor_value_info("label", elem, [None]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.DOUBLE, [None, len(classes)]
            ),
        ]
    nodes += tail.nodes
    initializers += tail.initializers
    opsets: dict[str, int] = {}
    for model in (front, back):
        for entry in model.opset_import:
            opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    graph = helper.make_graph(
        nodes,
        "kfp-lifecycle",
        list(front.graph.input),
        outputs,
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in sorted(opsets.items())],
        ir_version=IR_VERSION,
        producer_name="kfp-lifecycle",
    )
    onnx.checker.check_model(model)
    return model


def _calibrated(graph: Graph, p: str, classes: int, calibration: dict | None) -> str:
    """The Platt scaling kept in the bundle's metadata["calibration"], as the bundle applies
    it (kfp_lifecycle.core.bundle.calibrated): each class's p -> sigmoid(slope * logit(p) +
    intercept); two classes: the positive class's, the other 1 - it; more: every class's,
    then rows normalised. None: unchanged."""
    if not calibration:
        return p
    slopes = np.asarray(calibration["slopes"], dtype=np.float64)
    intercepts = np.asarray(calibration["intercepts"], dtype=np.float64)
    p = graph.op("Clip", p, graph.const(1e-12), graph.const(1 - 1e-12))
    if classes == 2:
        first, second = (graph.op("Gather", p, graph.const([i], np.int64), axis=1) for i in (0, 1))
        logit = graph.op("Log", graph.op("Div", second, first))
        scaled = graph.op(
            "Add", graph.op("Mul", graph.const(slopes[0]), logit), graph.const(intercepts[0])
        )
        positive = graph.op("Sigmoid", scaled)
        return graph.op("Concat", graph.op("Sub", graph.const(1.0), positive), positive, axis=1)
    logit = graph.op("Log", graph.op("Div", p, graph.op("Sub", graph.const(1.0), p)))
    scaled = graph.op(
        "Sigmoid",
        graph.op("Add", graph.op("Mul", graph.const(slopes), logit), graph.const(intercepts)),
    )
    total = graph.op("ReduceSum", scaled, graph.const([1], np.int64), keepdims=1)
    return graph.op("Div", scaled, total)


def _model_notes(bundle: Bundle, schema: InputSchema) -> dict[str, Any]:
    metadata = bundle.metadata
    return {
        "inputs": {c.name: c.kind for c in schema.columns},
        "missing": {"categorical": MISSING_TEXT, "datetime": int(MISSING_TIME), "number": "NaN"},
        "task": metadata["task"],
        "classes": metadata.get("classes"),
        "decision_threshold": metadata.get("decision_threshold"),
        "bundle_sha256": metadata.get("sha256"),
    }


@dataclass
class Parity:
    """ONNX Runtime against the bundle. Probabilities are compared absolutely; predictions
    relative to their size (|diff| / max(1, |prediction|)): a float32 model (XGBoost)
    predicting thousands resolves ~1e-4 itself, so an absolute 1e-4 would test its rounding."""

    rows: int
    max_abs_diff: float
    max_scaled_diff: float  # what the tolerance applies to
    measure: str  # probability | prediction
    tolerance: float
    passed: bool
    label_agreement: float | None  # classification: share of ONNX labels equal to the bundle's


def check_parity(bundle: Bundle, model_bytes: bytes, rows: pd.DataFrame) -> Parity:
    """Max absolute difference between ONNX Runtime and the bundle on `rows`; for a
    classifier also the share of rows whose ONNX label is the bundle's."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    task = bundle.metadata["task"]
    schema = InputSchema.from_dict(bundle.metadata["input_schema"])
    reference = bundle.predict(schema.coerce(rows))
    if task == CLASSIFICATION:
        labels, got = session.run(["label", "probabilities"], onnx_feed(rows, schema))
        expected = reference.probabilities
        same = [a == b for a, b in zip(labels.tolist(), reference.labels, strict=True)]
        agreement, measure = float(np.mean(same)), "probability"
    else:
        (got,) = session.run(["variable"], onnx_feed(rows, schema))
        expected = np.asarray(reference.labels, dtype=np.float64).reshape(-1, 1)
        agreement, measure = None, "prediction"
    if got.shape != expected.shape:
        raise ExportError(f"the ONNX model answers shape {got.shape}, the bundle {expected.shape}")
    expected = np.asarray(expected, dtype=np.float64)
    both_nan = np.isnan(got) & np.isnan(expected)
    absolute = np.where(both_nan, 0.0, np.abs(got - expected))
    scale = 1.0 if task == CLASSIFICATION else np.maximum(1.0, np.abs(expected))
    diff, scaled = (_worst(a) for a in (absolute, absolute / scale))
    return Parity(len(rows), diff, scaled, measure, TOLERANCE, scaled <= TOLERANCE, agreement)


def _worst(values: np.ndarray) -> float:
    worst = float(np.max(values, initial=0.0))
    return float("inf") if np.isnan(worst) else worst


def check_rows(bundle: Bundle) -> tuple[pd.DataFrame, str]:
    """The rows a registered version keeps: its reference sample (a seeded sample of the
    raw training rows, kept for drift monitoring)."""
    kept = bundle.metadata.get("reference")
    if not kept or not kept.get("table"):
        raise ExportError(
            "the bundle keeps no rows to check the ONNX model against (no reference sample: "
            "it was not registered by the training pipeline); give some with --rows FILE"
        )
    table = kept["table"]
    return pd.DataFrame(table["data"], columns=table["columns"]), "reference sample"


@dataclass
class ExportResult:
    model: str
    format: str
    onnx_file: str
    bytes: int
    seconds: float
    rows_source: str
    parity: Parity
    opsets: dict[str, int]
    libraries: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_bundle(
    bundle: Bundle,
    output: str | Path,
    model: str = "",
    rows: pd.DataFrame | None = None,
    rows_source: str = "given rows",
) -> ExportResult:
    """Write model.onnx and its report into `output` once the model agrees with the bundle.

    When conversion fails or parity is above TOLERANCE, the report says why and no
    model.onnx is left in `output` (not even one an earlier export wrote there).
    """
    started = time.perf_counter()
    output = Path(output)
    try:
        onnx_model = convert_bundle(bundle)
    except ExportError as error:
        _write_failure(output, model or str(bundle.path), str(error))
        raise
    data = onnx_model.SerializeToString()
    source = rows_source
    if rows is None:
        rows, source = check_rows(bundle)
    parity = check_parity(bundle, data, rows)
    notes = json.loads(onnx_model.doc_string)
    result = ExportResult(
        model=model or str(bundle.path),
        format="onnx",
        onnx_file=ONNX_FILE,
        bytes=len(data),
        seconds=round(time.perf_counter() - started, 3),
        rows_source=source,
        parity=parity,
        opsets={entry.domain or "ai.onnx": entry.version for entry in onnx_model.opset_import},
        libraries=_versions(),
        inputs=notes["inputs"],
    )
    output.mkdir(parents=True, exist_ok=True)
    if parity.passed:
        _write_atomically(output / ONNX_FILE, data)
    else:
        (output / ONNX_FILE).unlink(missing_ok=True)
    _write_report(output, result, notes)
    if not parity.passed:
        raise ExportError(
            f"the ONNX model differs from the bundle by {parity.max_scaled_diff:.3g} "
            f"({_measured(parity)} on {parity.rows} {source}; tolerance {TOLERANCE:g}); "
            f"model.onnx not written, see {output / REPORT_MD}"
        )
    return result


def _write_failure(output: Path, model: str, reason: str) -> None:
    """The report of an export that produced no model, and no stale model.onnx beside it."""
    output.mkdir(parents=True, exist_ok=True)
    (output / ONNX_FILE).unlink(missing_ok=True)
    report = {"model": model, "format": "onnx", "exported": False, "reason": reason}
    (output / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# ONNX export", "", f"- model: `{model}`", f"- not exported: {reason}"]
    (output / REPORT_MD).write_text("\n".join(lines) + "\n")


def _measured(parity: Parity) -> str:
    if parity.measure == "probability":
        return "max absolute probability difference"
    return "max prediction difference relative to max(1, |prediction|)"


def _versions() -> dict[str, str]:
    found = {}
    for name in ONNX_LIBRARIES:
        try:
            found[name] = version(name)
        except Exception:
            found[name] = "not installed"
    return found


def _write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as handle:
        handle.write(data)
    Path(handle.name).replace(path)


def _write_report(output: Path, result: ExportResult, notes: dict[str, Any]) -> None:
    report = {**result.to_dict(), "model_notes": notes}
    (output / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    parity = result.parity
    verdict = "passed" if parity.passed else "FAILED"
    lines = [
        "# ONNX export",
        "",
        f"- model: `{result.model}`",
        f"- file: `{ONNX_FILE}` ({result.bytes} bytes)" if parity.passed else "- file: not written",
        f"- check: {verdict}: {_measured(parity)} {parity.max_scaled_diff:.3g} on "
        f"{parity.rows} rows ({result.rows_source}), tolerance {parity.tolerance:g}"
        + (
            f" (max absolute difference {parity.max_abs_diff:.3g})"
            if parity.measure == "prediction"
            else ""
        ),
    ]
    if parity.label_agreement is not None:
        lines.append(
            f"- labels: the ONNX model's `label` is the bundle's on {parity.label_agreement:.2%} "
            "of the rows"
        )
    lines += [
        f"- opsets: {', '.join(f'{k} {v}' for k, v in result.opsets.items())}",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in result.libraries.items())}",
        "",
        "## Inputs (one [rows, 1] tensor each)",
        "",
        "| column | kind | ONNX type | missing value |",
        "| --- | --- | --- | --- |",
    ]
    types = {NUMERIC: "double", BOOLEAN: "double", CATEGORICAL: "string", DATETIME: "int64 (ns)"}
    missing = {NUMERIC: "NaN", BOOLEAN: "NaN", CATEGORICAL: '""', DATETIME: str(MISSING_TIME)}
    for name, kind in result.inputs.items():
        lines.append(f"| {name} | {kind} | {types[kind]} | {missing[kind]} |")
    if notes["task"] == CLASSIFICATION:
        outputs = (
            f"`label` (one of {notes['classes']}; for two classes, the second when its "
            f"probability >= {notes['decision_threshold'] or DEFAULT_DECISION_THRESHOLD}) "
            "and `probabilities` (double, one column per class, in that order)"
        )
    else:
        outputs = "`variable` (double, [rows, 1])"
    lines += ["", f"Outputs: {outputs}."]
    (output / REPORT_MD).write_text("\n".join(lines) + "\n")


def export_model(
    model: str, output: str | Path, fmt: str = "onnx", rows: str | None = None
) -> ExportResult:
    """Export `model` (a bundle directory, s3:// version URI or REGISTRY/MODEL@ALIAS or
    @VERSION) to `output` in `fmt`, checked on `rows` (a CSV or Parquet file, local or
    s3://) or else on the reference sample kept with the model."""
    from kfp_lifecycle.components.ingest import read_table
    from kfp_lifecycle.registry import load_served, load_version, resolve_reference

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose from: {', '.join(FORMATS)}")
    uri = resolve_reference(model)
    # a registered version on S3 is verified as the registry does; a local bundle as a
    # server loads one (its signature checked when it has one)
    bundle = load_version(uri) if uri.startswith("s3://") else load_served(uri)
    if rows is None:
        return export_bundle(bundle, output, model=uri)
    table = read_table(rows).drop(columns=[bundle.metadata["target"]], errors="ignore")
    return export_bundle(bundle, output, uri, table, f"rows of {rows}")
