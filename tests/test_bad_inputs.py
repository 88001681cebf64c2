"""The catalogue of bad inputs: each gets a specific error or a reported warning, never a
stack trace or a half-written output.

Errors are checked through the command line (exit code 2, one line naming the fault, no
output directory); warnings through the validate step, which writes them into its report.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset
from kserve.errors import InvalidInput

from kfp_lifecycle import cli
from kfp_lifecycle.components.validate import validate
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


WARNINGS = {
    "missing target values": (
        _table(y=[None, None, *(["a", "b"] * 29)]),
        "target 'y' is missing in 2 row(s); they are left out of training",
    ),
    "constant column": (_table(flag=1), "column 'flag' is constant (1): no information, dropped"),
    "mixed-type column": (
        _table(code=[str(i) if i % 4 else f"k{i}" for i in range(ROWS)]),
        "column 'code' mixes numbers (75%) and text (e.g. ['k0', 'k4', 'k8'])",
    ),
    "ID column": (
        _table(customer_id=np.arange(1000, 1000 + ROWS)),
        "column 'customer_id' looks like an identifier (100% distinct): dropped",
    ),
    "dates as strings": (
        _table(signed=pd.date_range("2026-01-01", periods=ROWS, freq="D").strftime("%Y-%m-%d")),
        "column 'signed' holds date-times as text: parsed as dates",
    ),
}


@pytest.mark.parametrize("case", list(WARNINGS))
def test_each_doubtful_column_is_a_reported_warning(case, tmp_path):
    frame, message = WARNINGS[case]
    dataset = Dataset(uri=str(tmp_path / "data.parquet"))
    frame.to_parquet(dataset.path)
    report = Artifact(uri=str(tmp_path / "report.json"))
    contract = Artifact(uri=str(tmp_path / "contract.json"))

    outputs = validate.python_func(dataset=dataset, target="y", report=report, contract=contract)

    assert outputs == ("classification", "roc_auc")  # a warning does not stop the run
    warnings = json.loads(Path(report.path).read_text())["warnings"]
    assert any(message in warning for warning in warnings), warnings


def test_a_category_never_seen_in_training_is_a_client_error(tmp_path, churn):
    model = BundleModel("churn", str(build_bundle(tmp_path / "bundle", churn)))
    assert model.load()
    row = json.loads(churn.drop(columns=["churned"]).head(1).to_json(orient="records"))[0]

    with pytest.raises(InvalidInput, match="field 'plan': category 'platinum' was never seen"):
        model.predict({"instances": [{**row, "plan": "platinum"}]})
