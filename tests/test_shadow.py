"""Shadow replay on a logged window: real bundles predict the logged inputs in process."""

import json

import numpy as np
import pytest
from bundles import build_bundle

from kfp_lifecycle import cli
from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.registry import LocalRegistry
from kfp_lifecycle.serving.payload_log import PREDICTION, log_rows
from kfp_lifecycle.shadow import ShadowOptions, shadow_replay


@pytest.fixture(scope="module")
def window(tmp_path_factory, churn):
    """A champion (linear), a candidate (another family) and the champion's logged answers."""
    root = tmp_path_factory.mktemp("shadow")
    champion = load_bundle(build_bundle(root / "champion", churn, "linear"))
    candidate = load_bundle(build_bundle(root / "candidate", churn, "random_forest"))
    inputs = churn.drop(columns="churned").head(400)
    log = log_rows(inputs, champion.predict(inputs), "req", "churn", "1")
    return champion, candidate, log


def test_the_champion_replayed_agrees_with_its_own_log(window):
    champion, _, log = window
    report = shadow_replay(log, champion, ShadowOptions(), champion)
    assert report.passed and report.agreement == 1.0 and report.shift == 0.0
    assert report.champion_reproduced == 1.0 and report.rows == 400
    assert report.candidate_seconds_per_row > 0


def test_agreement_and_shift_of_another_model_are_measured(window):
    _, candidate, log = window
    report = shadow_replay(log, candidate, ShadowOptions(min_agreement=0.0, max_shift=1.0))
    mine = np.asarray(candidate.predict(log.iloc[:, 5 : log.columns.get_loc(PREDICTION)]).labels)
    expected = float(np.mean(mine.astype(str) == log[PREDICTION].astype(str).to_numpy()))
    assert report.agreement == pytest.approx(expected) and 0 < expected < 1
    assert report.shift > 0


def test_the_gate_refuses_a_candidate_that_disagrees(window):
    champion, _, log = window
    flipped = log.copy()
    first, second = champion.classes
    flipped[PREDICTION] = [second if p == first else first for p in log[PREDICTION]]  # opposite
    report = shadow_replay(flipped, champion, ShadowOptions(min_agreement=0.9, max_shift=0.1))
    assert not report.passed
    assert report.reasons[0].startswith("FAIL: agreement 0.0% with the logged answers")


def test_latency_is_compared_with_the_champion_and_other_versions_rows_are_left_out(window):
    champion, candidate, log = window
    options = ShadowOptions(max_latency_ratio=1e-9, min_agreement=0, max_shift=1)
    report = shadow_replay(log, candidate, options, champion)
    assert not report.passed and any("latency" in r and "FAIL" in r for r in report.reasons)
    with pytest.raises(DataError, match="0 logged row"):
        shadow_replay(log, candidate, ShadowOptions(), version="2")


def test_the_cli_exits_3_when_the_gate_refuses(window, tmp_path, capsys):
    from kfp_lifecycle.serving.payload_log import _parquet_bytes

    champion, candidate, log = window
    day = log["timestamp"].iloc[0].strftime("%Y-%m-%d")
    partition = tmp_path / "log" / "churn" / f"date={day}"
    partition.mkdir(parents=True)
    (partition / "a.parquet").write_bytes(_parquet_bytes(log))
    common = ["shadow", "--log", str(tmp_path / "log"), "--log-model", "churn",
              "--start", day, "--end", day, "--output", str(tmp_path / "r.json")]  # fmt: skip
    # the CLI loads only registered (signed) versions, as a cluster would
    registry = LocalRegistry(tmp_path / "registry")
    first = registry.register("churn", champion.path, {"model_name": "churn"})
    second = registry.register("churn", candidate.path, {"model_name": "churn"})
    assert cli.main([*common, "--model", str(first.uri)]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["agreement"] == 1.0
    assert cli.main([*common, "--model", str(second.uri), "--min-agreement", "0.999"]) == 3
    assert "refused" in capsys.readouterr().out
