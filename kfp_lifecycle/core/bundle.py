"""The model bundle: the one directory layout that training writes and serving loads.

    <bundle>/model.joblib   one scikit-learn Pipeline (preprocessing + estimator)
    <bundle>/metadata.json  input schema, classes, metrics, library versions, sha256, lineage

KServe loads exactly one model file per directory, so nothing else goes beside them.

Format versions, and the promise: this code loads every format up to FORMAT_VERSION and
refuses a newer one by name (a registry may hold versions written by a newer release).
    1  0.1.0: the pickled transformers (SchemaCoercer, IQRClipper, DatetimeFeatures,
       KeepFeatures) recorded as kfp_lifecycle.components.preprocess / .features, modules
       that import kfp. Loaded by mapping those paths to kfp_lifecycle.core.transformers.
    2  the same layout and metadata; the transformers are recorded as
       kfp_lifecycle.core.transformers, so loading a model never imports kfp.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from kfp_lifecycle.core.errors import BundleError
from kfp_lifecycle.core.fastpath import CompiledPipeline, compile_pipeline
from kfp_lifecycle.core.schema import Columns, InputSchema, columns_frame
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.core.transformers import (
    DatetimeFeatures,
    IQRClipper,
    KeepFeatures,
    SchemaCoercer,
)

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 2
DEFAULT_DECISION_THRESHOLD = 0.5

# Libraries whose versions must match between the training and the serving side.
PINNED_LIBRARIES = (
    "scikit-learn", "xgboost-cpu", "lightgbm", "pandas", "numpy", "joblib", "kfp-lifecycle",
)  # fmt: skip

REQUIRED_METADATA = ("format_version", "sha256", "task", "target", "input_schema", "family")

# Where format 1 (0.1.0) pickles recorded the classes that now live in the core.
FORMAT_1_CLASSES: dict[tuple[str, str], type] = {
    ("kfp_lifecycle.components.preprocess", "SchemaCoercer"): SchemaCoercer,
    ("kfp_lifecycle.components.preprocess", "IQRClipper"): IQRClipper,
    ("kfp_lifecycle.components.preprocess", "DatetimeFeatures"): DatetimeFeatures,
    ("kfp_lifecycle.components.features", "KeepFeatures"): KeepFeatures,
}


@dataclass
class Prediction:
    labels: list[Any]
    probabilities: np.ndarray | None  # rows x classes, ordered as `classes`
    classes: list[Any] | None


@dataclass
class Bundle:
    path: Path
    pipeline: Any
    metadata: dict[str, Any]

    @cached_property
    def schema(self) -> InputSchema:
        return InputSchema.from_dict(self.metadata["input_schema"])

    @cached_property
    def compiled(self) -> CompiledPipeline | None:
        """The pipeline as numpy column transforms, or None: then sklearn predicts."""
        return compile_pipeline(self.pipeline, self.schema)

    @property
    def classes(self) -> list[Any] | None:
        return self.metadata.get("classes")

    def predict(self, frame: pd.DataFrame) -> Prediction:
        """Predict from raw feature rows; the pipeline's first step coerces them to the schema."""
        if self.metadata["task"] != CLASSIFICATION:
            return Prediction(self.pipeline.predict(frame).tolist(), None, None)
        return self._classified(self.pipeline.predict_proba(frame))

    def predict_columns(self, columns: Columns, fast: bool = True) -> Prediction:
        """Predict from request columns (`InputSchema.records_to_columns`): through the
        compiled pipeline when there is one and `fast`, else the sklearn pipeline."""
        compiled = self.compiled if fast else None
        if compiled is None:
            return self.predict(columns_frame(columns))
        if self.metadata["task"] != CLASSIFICATION:
            return Prediction(compiled.predict(columns).tolist(), None, None)
        return self._classified(compiled.predict_proba(columns))

    def predict_rows(self, rows: pd.DataFrame) -> Prediction:
        """Predict a batch of rows as the server predicts requests: checked and coerced
        (InputSchema.check_rows), then through the compiled path. Batch scoring and shadow
        replay call this, so all three give the served answers."""
        checked, _ = self.schema.check_rows(rows)
        return self.predict_checked(checked)

    def predict_checked(self, checked: pd.DataFrame) -> Prediction:
        """predict_rows for rows InputSchema.check_rows already coerced (batch scoring checks
        them once, to quarantine the bad ones first)."""
        return self.predict_columns({name: checked[name].to_numpy() for name in self.schema.names})

    def _classified(self, probabilities: np.ndarray) -> Prediction:
        """Labels from the model's class probabilities, after the calibration kept with it:
        the decision threshold for two classes."""
        probabilities = calibrated(probabilities, self.metadata.get("calibration"))
        classes = self.classes
        if len(classes) == 2:
            threshold = self.metadata.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)
            indices = (probabilities[:, 1] >= threshold).astype(int)
        else:
            indices = probabilities.argmax(axis=1)
        labels = np.asarray(classes, dtype=object)[indices].tolist()  # the Python values
        return Prediction(labels, probabilities, classes)


def calibrated(probabilities: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """The model's probabilities through the Platt scaling kept in metadata["calibration"]
    (chosen by the calibrate step): each class's probability p becomes
    sigmoid(slope * logit(p) + intercept); binary: the positive class's, the other is
    1 - it; multiclass: every class's, then rows are normalised (as scikit-learn's
    CalibratedClassifierCV does). None: unchanged."""
    if not calibration:
        return probabilities
    slopes = np.asarray(calibration["slopes"], dtype=float)
    intercepts = np.asarray(calibration["intercepts"], dtype=float)
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1 - 1e-12)
    if p.shape[1] == 2:
        positive = 1 / (1 + np.exp(-(slopes[0] * np.log(p[:, 1] / p[:, 0]) + intercepts[0])))
        return np.column_stack([1 - positive, positive])
    scaled = 1 / (1 + np.exp(-(slopes * np.log(p / (1 - p)) + intercepts)))
    return scaled / scaled.sum(axis=1, keepdims=True)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PINNED_LIBRARIES:
        try:
            versions[name] = version(name)
        except Exception:  # not installed: recorded as such rather than guessed
            versions[name] = "not installed"
    return versions


def write_bundle(directory: str | Path, pipeline: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write model file then metadata (with the file's sha256); returns the metadata written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    joblib.dump(pipeline, model_path)
    full = {
        **metadata,
        # The file just written is in this code's format, whatever metadata came along.
        "format_version": FORMAT_VERSION,
        "model_file": MODEL_FILE,
        "sha256": sha256_file(model_path),
        "libraries": library_versions(),
    }
    write_metadata(directory, full)
    return full


def write_metadata(directory: str | Path, metadata: dict[str, Any]) -> None:
    path = Path(directory) / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=_json_default))


def read_metadata(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise BundleError(f"{directory} is not a model bundle: {METADATA_FILE} is missing")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from None
    absent = [key for key in REQUIRED_METADATA if key not in metadata]
    if absent:
        raise BundleError(f"{path} lacks required field(s): {', '.join(absent)}")
    check_format(metadata["format_version"], path)
    return metadata


def check_format(format_version: Any, where: str | Path) -> None:
    """Refuse a bundle format this code does not know: newer, or not a format number at all."""
    if type(format_version) is not int or format_version < 1:
        raise BundleError(f"{where}: format_version {format_version!r} is not a bundle format")
    if format_version > FORMAT_VERSION:
        raise BundleError(
            f"{where} is bundle format {format_version}, newer than this kfp-lifecycle "
            f"reads (format {FORMAT_VERSION} and older); upgrade kfp-lifecycle to load it"
        )


def verify_bundle(directory: str | Path) -> dict[str, Any]:
    """Check the model file against the recorded sha256 before anything unpickles it."""
    return _verified(Path(directory))[0]


def load_bundle(directory: str | Path) -> Bundle:
    """Load a bundle of any format up to FORMAT_VERSION.

    The model file is read once: the bytes whose sha256 was checked are the bytes that are
    unpickled, so the file cannot be swapped between the check and the load.
    """
    directory = Path(directory)
    metadata, data = _verified(directory)
    return Bundle(directory, unpickle_model(data, metadata["format_version"]), metadata)


def unpickle_model(data: bytes, format_version: int) -> Any:
    """Unpickle a model file written as `format_version`, mapping moved classes home."""
    moved = FORMAT_1_CLASSES if format_version < 2 else {}
    return _BundleUnpickler("", io.BytesIO(data), True, moved=moved).load()


class _BundleUnpickler(joblib.numpy_pickle.NumpyUnpickler):
    """joblib's unpickler, resolving classes an older format recorded under other modules."""

    def __init__(self, *args: Any, moved: dict[tuple[str, str], type], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.moved = moved

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.moved:
            return self.moved[(module, name)]
        return super().find_class(module, name)


def _verified(directory: Path) -> tuple[dict[str, Any], bytes]:
    metadata = read_metadata(directory)
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(f"{directory} is not a model bundle: {MODEL_FILE} is missing")
    data = model_path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != metadata["sha256"]:
        raise BundleError(
            f"{model_path} does not match its recorded sha256 (expected {metadata['sha256']}, "
            f"found {actual}); refusing to load a modified model file"
        )
    return metadata, data


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in {METADATA_FILE}")
