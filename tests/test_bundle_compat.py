"""The bundle format's promise: bundles written by 0.1.0 still load and predict identically,
and a bundle from a newer format is refused by name rather than half-loaded."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfp_lifecycle.core.bundle import (
    FORMAT_VERSION,
    METADATA_FILE,
    load_bundle,
    verify_bundle,
    write_bundle,
)
from kfp_lifecycle.core.errors import BundleError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bundles-0.1.0"
CASES = sorted(path.name for path in FIXTURES.iterdir() if path.is_dir())


def test_every_kind_of_0_1_0_bundle_is_kept():
    assert CASES == [
        "binary_linear",
        "binary_xgboost",
        "multiclass_linear",
        "multiclass_random_forest_ordinal",
        "regression_hgb_target_encoding",
    ]


@pytest.mark.parametrize("case", CASES)
def test_a_0_1_0_bundle_predicts_exactly_what_0_1_0_predicted(case):
    directory = FIXTURES / case
    bundle = load_bundle(directory / "bundle")
    assert bundle.metadata["format_version"] == 1
    expected = json.loads((directory / "expected.json").read_text())

    prediction = bundle.predict(pd.read_parquet(directory / "rows.parquet"))

    assert prediction.labels == expected["labels"]
    assert prediction.classes == expected["classes"]
    if expected["probabilities"] is None:
        assert prediction.probabilities is None
    else:
        assert np.array_equal(prediction.probabilities, np.asarray(expected["probabilities"]))


def test_the_0_1_0_bundles_pickle_the_classes_that_moved():
    """Otherwise the compatibility test above would prove nothing about the remapping."""
    recorded = b"".join((FIXTURES / c / "bundle" / "model.joblib").read_bytes() for c in CASES)
    for module in (b"kfp_lifecycle.components.preprocess", b"kfp_lifecycle.components.features"):
        assert module in recorded
    for name in (b"SchemaCoercer", b"IQRClipper", b"DatetimeFeatures", b"KeepFeatures"):
        assert name in recorded


def test_a_bundle_of_a_newer_format_is_refused_naming_both_versions(tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "binary_linear" / "bundle", bundle_dir)
    metadata = json.loads((bundle_dir / METADATA_FILE).read_text())
    newer = FORMAT_VERSION + 1
    (bundle_dir / METADATA_FILE).write_text(json.dumps({**metadata, "format_version": newer}))

    message = (
        f"{bundle_dir / METADATA_FILE} is bundle format {newer}, newer than this kfp-lifecycle "
        f"reads (format {FORMAT_VERSION} and older); upgrade kfp-lifecycle to load it"
    )
    for load in (load_bundle, verify_bundle):
        with pytest.raises(BundleError) as refused:
            load(bundle_dir)
        assert str(refused.value) == message


def test_a_format_version_that_is_not_a_number_is_refused(tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "binary_linear" / "bundle", bundle_dir)
    metadata = json.loads((bundle_dir / METADATA_FILE).read_text())
    (bundle_dir / METADATA_FILE).write_text(json.dumps({**metadata, "format_version": "2"}))
    with pytest.raises(BundleError, match="format_version '2' is not a bundle format"):
        load_bundle(bundle_dir)


def test_a_model_file_changed_after_writing_is_refused(tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "binary_linear" / "bundle", bundle_dir)
    with open(bundle_dir / "model.joblib", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="does not match its recorded sha256"):
        load_bundle(bundle_dir)


def test_a_rewritten_0_1_0_model_records_the_core_paths_and_predicts_the_same(tmp_path):
    """Format 2 pickles the transformers from the core, where they no longer move."""
    directory = FIXTURES / "binary_linear"
    old = load_bundle(directory / "bundle")
    written = write_bundle(tmp_path / "bundle", old.pipeline, old.metadata)
    assert written["format_version"] == FORMAT_VERSION == 2
    recorded = (tmp_path / "bundle" / "model.joblib").read_bytes()
    assert b"kfp_lifecycle.core.transformers" in recorded
    assert b"kfp_lifecycle.components" not in recorded

    rows = pd.read_parquet(directory / "rows.parquet")
    new = load_bundle(tmp_path / "bundle").predict(rows)
    assert np.array_equal(new.probabilities, old.predict(rows).probabilities)
