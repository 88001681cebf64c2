"""A KServe model that serves one model bundle over the V1 and V2 (Open Inference) protocols.

Requests are checked against the bundle's input schema before the pipeline sees them, so a
client mistake becomes a 400 that names the field instead of a 500 from deep inside sklearn.
The conversions are plain functions so they can be tested without starting a server.
"""

from __future__ import annotations

import atexit
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import prometheus_client
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from threadpoolctl import threadpool_limits

from kfp_lifecycle.core.bundle import Bundle, Prediction
from kfp_lifecycle.core.errors import SchemaError
from kfp_lifecycle.core.schema import (
    BOOLEAN,
    CATEGORICAL,
    DATETIME,
    NUMERIC,
    SHOWN_CHARACTERS,
    Columns,
    InputSchema,
    Unseen,
    columns_frame,
    shown,
)
from kfp_lifecycle.registry import load_served, model_version_of
from kfp_lifecycle.serving.explain import NotExplainable, explain_rows
from kfp_lifecycle.serving.limits import note_refusal
from kfp_lifecycle.serving.payload_log import (
    LOGGED_ROWS,
    REQUEST_ID,
    LogSettings,
    PayloadLogger,
    log_rows,
    request_id_from,
)

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"
PROBABILITIES = "probabilities"

# The runtime's own metrics, beside KServe's request_*_seconds. Every series carries the
# model version, which is how a canary is told apart from the stable revision.
REQUESTS = prometheus_client.Counter(
    "kfp_lifecycle_requests_total",
    "Prediction requests by outcome: ok, rejected (client error, 4xx) or error (5xx).",
    ["model_name", "model_version", "outcome"],
)
LATENCY = prometheus_client.Histogram(
    "kfp_lifecycle_request_seconds",
    "Time to answer a prediction request, failed ones included.",
    ["model_name", "model_version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REJECTED = prometheus_client.Counter(
    "kfp_lifecycle_rejected_requests_total",
    "Refused requests (4xx) by reason: malformed_body, schema, too_large, not_found, "
    "invalid_body, ...; their sum equals the 4xx responses.",
    ["model_name", "model_version", "reason"],
)
UNSEEN_VALUES = prometheus_client.Counter(
    "kfp_lifecycle_unseen_categories_total",
    "Served values of a categorical column that training never saw, by column (mapped as "
    "training mapped rare values).",
    ["model_name", "model_version", "column"],
)
PREDICTED_LABELS = prometheus_client.Counter(
    "kfp_lifecycle_predictions_total",
    "Predicted rows by predicted class (classifiers only: a regression has no classes).",
    ["model_name", "model_version", "label"],
)

UNSEEN_WARNING = "category never seen in training; served as training served rare categories"

INTEGER_DATATYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
NUMERIC_DATATYPES = INTEGER_DATATYPES | {"FP16", "FP32", "FP64"}
# Which V2 tensor datatypes can carry a column of each schema kind.
ACCEPTED_DATATYPES: dict[str, frozenset[str]] = {
    NUMERIC: NUMERIC_DATATYPES,
    BOOLEAN: frozenset({"BOOL"}),
    CATEGORICAL: INTEGER_DATATYPES | {"BYTES"},
    DATETIME: frozenset({"BYTES"}),
}
# The datatype advertised in the V2 model metadata for each kind.
INPUT_DATATYPE = {NUMERIC: "FP64", BOOLEAN: "BOOL", CATEGORICAL: "BYTES", DATETIME: "BYTES"}


def one_thread_per_request(estimator: Any) -> None:
    """Predict on one thread: the server answers many requests at once, and a request of a
    few rows pays more to start and join threads than they save (an XGBoost row: ~20x).
    Predictions are the same (a forest's sum over trees gets a fixed order)."""
    threadpool_limits(1)  # OpenMP and BLAS pools, for the whole server process
    params = estimator.get_params() if hasattr(estimator, "get_params") else {}
    if "n_jobs" in params:
        estimator.set_params(n_jobs=1)


def v1_records(payload: Any) -> list[dict[str, Any]]:
    """The records of a V1 body: `{"instances": [{column: value, ...}, ...]}`."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput(
            'expected a JSON object with "instances": a list of records keyed by column name'
        )
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list of records, got {type(instances).__name__}')
    if not instances:
        raise InvalidInput('"instances" is empty: send at least one record')
    return instances


def v2_records(request: InferRequest, schema: InputSchema) -> list[dict[str, Any]]:
    """Turn one V2 tensor per column into records; tensors for unknown columns are ignored."""
    columns: dict[str, list[Any]] = {}
    datatypes: dict[str, str] = {}
    for tensor in request.inputs:
        if tensor.name in columns:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        columns[tensor.name] = _tensor_values(tensor)
        datatypes[tensor.name] = tensor.datatype
    missing = [name for name in schema.names if name not in columns]
    if missing:
        raise InvalidInput(f"missing input tensor(s): {', '.join(missing)}")
    for column in schema.columns:
        datatype = datatypes[column.name]
        if datatype not in ACCEPTED_DATATYPES[column.kind]:
            raise InvalidInput(
                f"input '{column.name}': datatype {datatype} does not fit a {column.kind} "
                f"column; send {INPUT_DATATYPE[column.kind]}"
            )
    lengths = {name: len(columns[name]) for name in schema.names}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise InvalidInput(f"input tensors differ in length: {detail}")
    if not lengths[schema.names[0]]:
        raise InvalidInput("input tensors are empty: send at least one row")
    rows = zip(*(columns[name] for name in schema.names), strict=True)
    return [dict(zip(schema.names, row, strict=True)) for row in rows]


def records_frame(records: list[dict[str, Any]], schema: InputSchema) -> pd.DataFrame:
    """Validate records against the schema; a mismatch is the client's error (HTTP 400)."""
    columns, _ = records_columns(records, schema, strict=True)
    return columns_frame(columns)


def records_columns(
    records: list[dict[str, Any]], schema: InputSchema, strict: bool = False
) -> tuple[Columns, list[Unseen]]:
    """Request columns and the unseen categories in them; a schema mismatch is a 400."""
    try:
        return schema.records_to_columns(records, strict=strict)
    except SchemaError as error:
        note_refusal("schema")
        raise InvalidInput(str(error)) from None


def warnings_of(unseen: list[Unseen]) -> list[dict[str, Any]]:
    """One warning per unseen value, naming its row and field (the value cut if long)."""
    return [
        {
            "row": u.row,
            "field": u.field,
            "value": shown_value(u.value),
            "warning": "category never seen in training; served as training served rare categories",
        }
        for u in unseen
    ]


def shown_value(value: Any) -> Any:
    text = str(value)
    return value if len(text) <= SHOWN_CHARACTERS else shown(text)


def logged_value(text: str) -> str:
    """A long new category as the request log keeps it: its start and its length."""
    return f"{text[:SHOWN_CHARACTERS]}... ({len(text)} characters)"


def v1_response(prediction: Prediction, version: str) -> dict[str, Any]:
    """Probabilities keyed by class, as text because JSON object keys are text."""
    response: dict[str, Any] = {PREDICTIONS: prediction.labels}
    if prediction.probabilities is not None:
        keys = [str(c) for c in prediction.classes]
        response[PROBABILITIES] = [
            dict(zip(keys, row, strict=True)) for row in prediction.probabilities.tolist()
        ]
    response["model_version"] = version
    return response


def v2_response(
    prediction: Prediction, model_name: str, version: str, request: InferRequest
) -> InferResponse:
    """Labels as `predictions`; for classifiers `probabilities` [n, classes], class order in its
    parameters as a JSON list (V2 parameters hold scalars only)."""
    labels = prediction.labels
    outputs = [
        InferOutput(PREDICTIONS, [len(labels)], _datatype(labels), _label_array(labels)),
    ]
    if prediction.probabilities is not None:
        probabilities = np.asarray(prediction.probabilities, dtype=np.float64)
        outputs.append(
            InferOutput(
                PROBABILITIES,
                list(probabilities.shape),
                "FP64",
                probabilities,
                parameters={"classes": json.dumps(prediction.classes)},
            )
        )
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=outputs,
        model_version=version,
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )


class BundleModel(Model):
    """Serves one bundle directory; refuses to become ready if the model file was modified.

    `strict` refuses categories training never saw (400) instead of serving them with a
    warning; `fast_path` False predicts through the sklearn pipeline (the reference);
    `log_grace_seconds` bounds how long a stop waits for the request log to be written.
    """

    def __init__(
        self,
        name: str,
        model_dir: str,
        strict: bool = False,
        fast_path: bool = True,
        log_grace_seconds: float = 20.0,
        require_signature: bool = False,
    ):
        super().__init__(name, return_response_headers=True)  # x-request-id
        self.model_dir = model_dir
        self.require_signature = require_signature
        self.strict = strict
        self.fast_path = fast_path
        self.log_grace_seconds = log_grace_seconds
        self.bundle: Bundle | None = None
        self.version: str | None = None
        self.payload_log: PayloadLogger | None = None

    def load(self) -> bool:
        bundle = load_served(self.model_dir, self.require_signature)
        if self.fast_path and bundle.compiled is not None:
            one_thread_per_request(bundle.compiled.estimator)
        self.bundle = bundle
        self.version = model_version_of(bundle.metadata)
        settings = LogSettings.from_env()
        if settings is not None and self.payload_log is None:
            self.payload_log = PayloadLogger(settings, self.name)
            # A stop by signal still writes the rest, within the grace period.
            atexit.register(self.payload_log.close, self.log_grace_seconds)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        if self.payload_log is not None:
            self.payload_log.close(self.log_grace_seconds)
        super().stop()

    def count_response(self, method: str, status: int, reason: str | None) -> None:
        """Every answer, counted once (by limits.RequestOutcomes, around the whole app)."""
        labels = {"model_name": self.name, "model_version": self.version}
        outcome = "ok" if status < 400 else "rejected" if status < 500 else "error"
        REQUESTS.labels(**labels, outcome=outcome).inc()
        if reason is not None:
            REJECTED.labels(**labels, reason=reason).inc()

    def _log(
        self, columns: Columns, unseen: list[Unseen], prediction: Prediction, request_id: str
    ) -> None:
        """Hand the rows to the request log; a failure here never fails the prediction.

        New categories are logged as sent, so drift monitoring sees them; one longer than
        SHOWN_CHARACTERS is cut (its length stated), so a megabyte value cannot bloat the
        log or the drift report's charts."""
        try:
            for u in unseen:
                if len(columns[u.field][u.row]) > SHOWN_CHARACTERS:
                    columns[u.field][u.row] = logged_value(columns[u.field][u.row])
            frame = columns_frame(columns)
            self.payload_log.log(log_rows(frame, prediction, request_id, self.name, self.version))
        except Exception as error:  # the log must never fail a prediction
            LOGGED_ROWS.labels(self.name, "failed").inc(len(prediction.labels))
            logger.warning("request log: could not queue request %s: %s", request_id, error)

    def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        labels = {"model_name": self.name, "model_version": self.version}
        started = time.perf_counter()
        v2 = isinstance(payload, InferRequest)
        request_id = (v2 and payload.id) or request_id_from(headers)
        try:
            schema = self.bundle.schema
            records = v2_records(payload, schema) if v2 else v1_records(payload)
            columns, unseen = records_columns(records, schema, self.strict)
            prediction = self.bundle.predict_columns(columns, fast=self.fast_path)
            warnings = warnings_of(unseen)
            if v2:
                payload.id = request_id  # the V2 response carries it as its id
                response = v2_response(prediction, self.name, self.version, payload)
                if warnings:
                    response.parameters = {"warnings": json.dumps(warnings)}
            else:
                response = {**v1_response(prediction, self.version), REQUEST_ID: request_id}
                if warnings:
                    response["warnings"] = warnings
        except InvalidInput:
            note_refusal("malformed_body")  # unless the schema check said "schema" first
            raise
        finally:
            LATENCY.labels(**labels).observe(time.perf_counter() - started)
        for field, count in Counter(u.field for u in unseen).items():
            UNSEEN_VALUES.labels(**labels, column=field).inc(count)
        if prediction.classes:
            for label, count in Counter(str(v) for v in prediction.labels).items():
                PREDICTED_LABELS.labels(**labels, label=label).inc(count)
        if response_headers is not None:
            response_headers["x-request-id"] = request_id
        if self.payload_log is not None:
            self._log(columns, unseen, prediction, request_id)
        return response

    async def explain(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict:
        """V1 `:explain`: each row's largest feature contributions, bias and raw score."""
        request_id = request_id_from(headers)
        schema = self.bundle.schema
        try:
            columns, unseen = records_columns(v1_records(payload), schema, self.strict)
        except InvalidInput:
            note_refusal("malformed_body")
            raise
        frame = columns_frame(columns)
        try:
            explanations = explain_rows(self.bundle, frame)
        except NotExplainable as error:
            note_refusal("not_explainable")
            raise InvalidInput(str(error)) from None
        prediction = self.bundle.predict(frame)
        response = {
            **v1_response(prediction, self.version),
            REQUEST_ID: request_id,
            "explanations": explanations,
        }
        if unseen:
            response["warnings"] = warnings_of(unseen)
        kept = self.bundle.metadata.get("explanation")  # global importance, from training
        if kept:
            response["global_importance"] = {
                "method": kept["method"],
                "permutation_importance": kept["permutation_importance"],
            }
        return response

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.bundle is None:
            return []
        return [
            {"name": c.name, "datatype": INPUT_DATATYPE[c.kind], "shape": [-1]}
            for c in self.bundle.schema.columns
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self.bundle is None:
            return []
        classes = self.bundle.classes
        if not classes:
            return [{"name": PREDICTIONS, "datatype": "FP64", "shape": [-1]}]
        return [
            {"name": PREDICTIONS, "datatype": _datatype(classes), "shape": [-1]},
            {"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(classes)]},
        ]


def _tensor_values(tensor: Any) -> list[Any]:
    """One value per row from a tensor of shape [n] or [n, 1]; BYTES decoded to text."""
    shape = list(tensor.shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(
            f"input '{tensor.name}' has shape {shape}; expected [n] or [n, 1] (one value per row)"
        )
    values = _flatten(tensor.data)
    if len(values) != shape[0]:
        raise InvalidInput(
            f"input '{tensor.name}' has {len(values)} value(s) but its shape says {shape[0]}"
        )
    if tensor.datatype != "BYTES":
        return values
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{tensor.name}' holds bytes that are not UTF-8") from None


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).tolist()
    if not isinstance(data, list | tuple):
        return [data]
    return [value for item in data for value in _flatten(item)]


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def _label_array(labels: list[Any]) -> np.ndarray:
    datatype = _datatype(labels)
    if datatype == "BOOL":
        return np.asarray(labels, dtype=bool)
    if datatype == "INT64":
        return np.asarray(labels, dtype=np.int64)
    if datatype == "FP64":
        return np.asarray(labels, dtype=np.float64)
    return np.asarray([str(v) for v in labels], dtype=object)
