"""The data contract: inferred on the first training table, kept with the model, checked
against later tables (errors stop, warnings are reported)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset

from kfp_lifecycle.components.validate import (
    ERROR,
    MAX_CONTRACT_CATEGORIES,
    WARNING,
    check_contract,
    enforce_contract,
    infer_contract,
    validate,
)
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.local_run import pipeline_arguments
from kfp_lifecycle.registry import CHAMPION, LocalRegistry, set_alias
from tests.bundles import build_bundle


@pytest.fixture(scope="module")
def contract(churn):
    return infer_contract(churn, "churned")


def _findings(frame, contract):
    return {(f.severity, f.column, f.check) for f in check_contract(frame, contract)}


def test_contract_records_types_ranges_categories_nulls_and_uniqueness(churn, contract):
    columns = contract["columns"]
    assert contract["target"] == "churned" and contract["rows"] == len(churn)
    assert columns["tenure_months"]["kind"] == "numeric"
    assert columns["tenure_months"]["min"] == churn["tenure_months"].min()
    assert columns["tenure_months"]["max"] == churn["tenure_months"].max()
    assert columns["contract"]["categories"] == ["month-to-month", "one-year", "two-year"]
    assert columns["age"]["null_rate"] == pytest.approx(churn["age"].isna().mean(), abs=1e-6)
    assert columns["region"]["unique"] is False
    json.dumps(contract)  # it travels as JSON in the bundle's metadata


def test_data_like_the_training_data_keeps_the_contract(churn, contract):
    assert check_contract(churn.sample(frac=0.5, random_state=1), contract) == []


def test_each_breach_is_named_with_its_severity(churn, contract):
    changed = churn.copy()
    changed["support_calls"] = changed["support_calls"].astype(str) + " calls"  # type changed
    changed = changed.drop(columns=["payment_method"])  # column gone
    changed.loc[:9, "plan"] = "platinum"  # unseen category
    changed.loc[:4, "tenure_months"] = 10_000  # far outside the training range
    changed.loc[: len(changed) // 2, "monthly_charges"] = np.nan  # null rate jumped

    assert _findings(changed, contract) == {
        (ERROR, "support_calls", "type"),
        (ERROR, "payment_method", "present"),
        (WARNING, "plan", "categories training never saw"),
        (WARNING, "tenure_months", "outside the training range"),
        (WARNING, "monthly_charges", "null rate"),
    }
    with pytest.raises(DataError, match="'support_calls' type: was numeric in training"):
        enforce_contract(changed, contract)


def test_values_just_past_the_training_range_are_tolerated(churn, contract):
    nudged = churn.copy()
    nudged.loc[:4, "age"] = churn["age"].max() + 1
    assert _findings(nudged, contract) == set()


def test_validate_checks_new_data_against_the_champions_contract(tmp_path, churn, contract):
    registry = LocalRegistry(tmp_path / "registry")
    bundle = build_bundle(tmp_path / "bundle", churn)
    version = registry.register("churn", bundle, {"contract": contract})
    set_alias(registry, "churn", CHAMPION, version.version)

    def run(frame, name):
        dataset = Dataset(uri=str(tmp_path / f"{name}.parquet"))
        frame.to_parquet(dataset.path)
        report = Artifact(uri=str(tmp_path / f"{name}-report.json"))
        kept = Artifact(uri=str(tmp_path / f"{name}-contract.json"))
        validate.python_func(
            dataset=dataset,
            target="churned",
            report=report,
            contract=kept,
            registry=str(tmp_path / "registry"),
            model_name="churn",
        )
        return json.loads(Path(report.path).read_text())

    shifted = churn.copy()
    shifted.loc[:9, "plan"] = "platinum"
    findings = run(shifted, "shifted")["findings"]
    assert [(f["severity"], f["column"]) for f in findings] == [(WARNING, "plan")]

    broken = churn.drop(columns=["age"])
    with pytest.raises(DataError, match="breaks the champion's data contract: error: 'age'"):
        run(broken, "broken")


def test_a_run_on_data_that_breaks_the_contract_stops_before_any_step(tmp_path, churn, contract):
    """The local runner checks the champion's contract with validate's own functions."""
    registry = LocalRegistry(tmp_path / "registry")
    version = registry.register(
        "churn", build_bundle(tmp_path / "bundle", churn), {"contract": contract}
    )
    set_alias(registry, "churn", CHAMPION, version.version)
    data = tmp_path / "new.csv"
    churn.drop(columns=["age"]).to_csv(data, index=False)
    config = parse_config(
        {
            "data": {"source": str(data), "target": "churned"},
            "registry": str(tmp_path / "registry"),
            "model_name": "churn",
            "output": str(tmp_path / "out"),
        }
    )
    with pytest.raises(DataError, match="breaks the champion's data contract: error: 'age'"):
        pipeline_arguments(config)
    assert not (tmp_path / "out").exists()
    churn.to_csv(data, index=False)  # data that keeps the contract passes
    assert pipeline_arguments(config)["registry"] == str(tmp_path / "registry")


def test_a_high_cardinality_column_keeps_no_category_list():
    """Cities, products: new values there are normal (preprocessing groups them), so only
    columns with few enough categories get the 'never seen' check; its examples are distinct."""
    rows = 3 * MAX_CONTRACT_CATEGORIES
    frame = pd.DataFrame(
        {
            "city": [f"city-{i % (MAX_CONTRACT_CATEGORIES + 500)}" for i in range(rows)],
            "plan": ["basic", "pro", "max"] * MAX_CONTRACT_CATEGORIES,
            "y": [0, 1] * (rows // 2),
        }
    )
    contract = infer_contract(frame, "y")
    assert "categories" not in contract["columns"]["city"]
    assert contract["columns"]["city"]["distinct"] == MAX_CONTRACT_CATEGORIES + 500
    later = frame.assign(city="city-new", plan=["basic", "gold"] * (rows // 2))
    findings = check_contract(later, contract)
    assert [(f.column, f.check) for f in findings] == [("plan", "categories training never saw")]
    assert findings[0].message == f"{rows // 2} row(s), e.g. 'gold'"
