"""The catalogue of bad inputs: each gets a specific error or a reported warning, never a
stack trace or a half-written output.

Errors are checked through the command line (exit code 2, one line naming the fault, no
output directory); warnings through the validate step, which writes them into its report, and
a warning that says a column is dropped against what preprocessing then keeps.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset
from kserve.errors import InvalidInput

from kfp_lifecycle import cli
from kfp_lifecycle.components.preprocess import fit_preprocessor
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.components.validate import validate
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.errors import STEP_FAILURE_FILE, StepCrashed, StepFailed
from kfp_lifecycle.local_run import step_failure
from kfp_lifecycle.serving.model import BundleModel
from tests.bundles import build_bundle

ROWS = 60


def _table(**columns) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=ROWS), "y": ["a", "b"] * (ROWS // 2)})
    return frame.assign(**columns)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


ERRORS = {
    "empty file": (b"", "is empty"),
    "header only": (b"x,y\n", "has a header but no rows"),
    "wrong delimiter": (
        _csv(_table()).replace(b",", b":"),
        "reads as one column named 'x:y': the delimiter looks wrong",
    ),
    "not UTF-8": (b"x,y\ncaf\xe9,a\nbar,b\n", "not UTF-8"),
    "single-class target": (
        _csv(_table(y="a")),
        "target 'y' is constant ('a'); a model needs at least two values",
    ),
    "all-null column": (_csv(_table(empty=np.nan)), "column(s) entirely null: empty"),
    "only an ID column": (
        _csv(pd.DataFrame({"id": [f"u{i}" for i in range(ROWS)], "y": ["a", "b"] * (ROWS // 2)})),
        "no usable feature columns left after cleaning (id: ID-like (60 distinct values in 60 "
        "rows))",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_bad_file_stops_the_run_with_one_specific_line(case, tmp_path, capsys):
    content, message = ERRORS[case]
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    output = tmp_path / "out"
    argv = ["run", "training", "--data", str(data), "--target", "y", "--output", str(output)]

    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not output.exists()  # nothing half-written


# Each case: the table, the warning it gets, and the column preprocessing drops (or None).
WARNINGS = {
    "missing target values": (
        _table(y=[None, None, *(["a", "b"] * 29)]),
        "target 'y' is missing in 2 row(s); they are left out of training",
        None,
    ),
    "constant column": (
        _table(flag=1),
        "column 'flag' is constant (every row holds 1): no information, dropped by preprocessing",
        "flag",
    ),
    "mixed-type column": (
        _table(code=[str(i % 10) if i % 4 else f"k{i % 3}" for i in range(ROWS)]),
        "column 'code' mixes numbers (75%) and text (e.g. ['k0', 'k1', 'k2'])",
        None,
    ),
    "ID column": (
        _table(customer_id=np.arange(1000, 1000 + ROWS)),
        "column 'customer_id' looks like an identifier, ID-like (60 distinct values in 60 rows)"
        ": it cannot generalise to new rows, dropped by preprocessing",
        "customer_id",
    ),
    "ID column with a repeat": (
        _table(order_id=[*range(5000, 5000 + ROWS - 1), 5000]),
        "column 'order_id' looks like an identifier, ID-like (59 distinct values in 60 rows)",
        "order_id",
    ),
    "dates as strings": (
        _table(signed=pd.date_range("2026-01-01", periods=ROWS, freq="D").strftime("%Y-%m-%d")),
        "column 'signed' holds date-times as text: parsed as dates",
        None,
    ),
}


def _validate_warnings(frame: pd.DataFrame, directory: Path) -> list[str]:
    dataset = Dataset(uri=str(directory / "data.parquet"))
    frame.to_parquet(dataset.path)
    report = Artifact(uri=str(directory / "report.json"))
    contract = Artifact(uri=str(directory / "contract.json"))
    outputs = validate.python_func(dataset=dataset, target="y", report=report, contract=contract)
    assert outputs == ("classification", "roc_auc")  # a warning does not stop the run
    return json.loads(Path(report.path).read_text())["warnings"]


def _fitted_inputs(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """What preprocessing keeps when the table goes through the pipeline's split."""
    train = split_table(frame.dropna(subset=["y"]), "y", CLASSIFICATION).train
    _, schema, report = fit_preprocessor(train, "y", CLASSIFICATION)
    return schema.names, report.features


@pytest.mark.parametrize("case", list(WARNINGS))
def test_each_doubtful_column_is_a_reported_warning(case, tmp_path):
    frame, message, _ = WARNINGS[case]
    warnings = _validate_warnings(frame, tmp_path)
    assert any(message in warning for warning in warnings), warnings


@pytest.mark.parametrize("case", list(WARNINGS))
def test_what_the_warning_says_is_what_preprocessing_does(case, tmp_path):
    """A column warned 'dropped' is absent from the fitted inputs and features; the rest
    of the doubtful columns are kept."""
    frame, _, dropped = WARNINGS[case]
    warnings = _validate_warnings(frame, tmp_path)
    inputs, features = _fitted_inputs(frame)
    warned = {
        name for name in frame.columns if any(f"'{name}'" in w and "dropped" in w for w in warnings)
    }
    assert warned == ({dropped} if dropped else set())
    for name in set(frame.columns) - {"x", "y"}:
        if name == dropped:
            assert name not in inputs and not any(name in f for f in features), features
        else:
            assert name in inputs


def test_a_flag_of_one_value_and_gaps_is_kept_not_called_constant(tmp_path):
    """Missing counts as a value: 1.0 or missing is a flag, its missing indicator the signal."""
    frame = _table(coupon=[1.0 if i % 3 else np.nan for i in range(ROWS)])
    assert not any("'coupon'" in w for w in _validate_warnings(frame, tmp_path))
    inputs, features = _fitted_inputs(frame)
    assert "coupon" in inputs and any("coupon" in f and "missing" in f for f in features)


def test_an_s3_registry_without_credentials_stops_the_run_in_one_line(
    tmp_path, capsys, monkeypatch
):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data.csv"
    data.write_bytes(_csv(_table()))
    output = tmp_path / "out"
    argv = ["run", "training", "--data", str(data), "--target", "y", "--output", str(output),
            "--registry", "s3://models/registry"]  # fmt: skip

    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: registry s3://models/registry: AWS_ACCESS_KEY_ID is not set: S3 access needs "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    ]
    assert not output.exists()


def test_a_category_never_seen_in_training_is_a_client_error_in_strict_mode(tmp_path, churn):
    model = BundleModel("churn", str(build_bundle(tmp_path / "bundle", churn)), strict=True)
    assert model.load()
    row = json.loads(churn.drop(columns=["churned"]).head(1).to_json(orient="records"))[0]

    with pytest.raises(InvalidInput, match="field 'plan': category 'platinum' was never seen"):
        model.predict({"instances": [{**row, "plan": "platinum"}]})
    # A number where a category is expected reads as the number, not as numpy's repr.
    with pytest.raises(InvalidInput, match="field 'plan': category 3 was never seen in training"):
        model.predict({"instances": [{**row, "plan": 3}]})


def test_a_step_that_fails_leaves_its_reason_beside_its_outputs(tmp_path):
    """The hook a running step gets through kfp_lifecycle.component: kfp runs the step's
    source text alone, so the record is the only way its reason reaches the local runner."""
    task_root = tmp_path / "pipeline-root" / "training-run" / "preprocess"
    executor_input = json.dumps({"outputs": {"outputFile": str(task_root / "output.json")}})
    code = (
        "import kfp_lifecycle.component\n"  # as every step module does
        "from kfp_lifecycle.core.errors import DataError\n"
        "raise DataError('no usable column')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--executor_input", executor_input],
        env={**os.environ, "_KFP_RUNTIME": "true"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr  # the step's log keeps the traceback
    record = json.loads((task_root / STEP_FAILURE_FILE).read_text())
    assert {k: record[k] for k in ("step", "error", "message", "user_error")} == {
        "step": "preprocess",
        "error": "DataError",
        "message": "no usable column",
        "user_error": True,
    }


def _record(root: Path, run: str, step: str, at: float, **fields) -> None:
    directory = root / run / step
    directory.mkdir(parents=True)
    record = {"step": directory.name, "error": "DataError", "message": "", "user_error": True}
    record.update(fields)
    (directory / STEP_FAILURE_FILE).write_text(json.dumps({**record, "time": at}))


def test_the_first_failure_of_this_run_is_the_one_reported(tmp_path):
    _record(tmp_path, "earlier-run", "split", 50.0, message="from another run")
    _record(tmp_path, "run", "profile", 102.0, error="ValueError", user_error=False)
    _record(tmp_path, "run", "for-loop-1-iteration-0/train", 101.0, message="no rows left")
    failure = step_failure(tmp_path, 100.0, "Pipeline 'training' finished with status FAILURE")
    assert isinstance(failure, StepFailed)
    assert str(failure) == "step 'train' failed: no rows left"

    crash = step_failure(tmp_path, 101.5, "")
    assert isinstance(crash, StepCrashed) and not isinstance(crash, LifecycleError)
    assert str(crash).startswith("step 'profile' failed with ValueError: ")


def test_without_a_record_the_failing_step_is_named_without_colour_codes(tmp_path):
    kfp_message = (
        "Pipeline \x1b[95m'training'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. "
        "Inner task failed: \x1b[96m'ingest'\x1b[0m."
    )
    failure = step_failure(tmp_path, 0.0, kfp_message)
    assert str(failure) == "step 'ingest' failed; its log is above"
