"""Batch scoring: chunks from a file, a partitioned directory and an S3 prefix; predictions
equal to bundle.predict; quarantine; the failure share; drift; an atomic publish that a
SIGKILL mid-run cannot break; the CLI through kfp.local; the compiled pipeline."""

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from bundles import register_churn
from s3_server import new_bucket, running_moto

from kfp_lifecycle import cli
from kfp_lifecycle.cluster import S3_SECRET
from kfp_lifecycle.components import score as score_module
from kfp_lifecycle.components.drift import detect_drift, reference_frame
from kfp_lifecycle.components.score import (
    QUARANTINE_FILE,
    SUMMARY_FILE,
    ScoreOptions,
    ScoringFailed,
    predict_chunk,
    score_batch,
)
from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import ColumnSpec, InputSchema
from kfp_lifecycle.demo import make_churn_dataset
from kfp_lifecycle.drift_run import read_current
from kfp_lifecycle.pipelines import COMPILED_DIR
from kfp_lifecycle.storage import list_keys, upload_file

ROWS = 3000


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """REGISTRY/churn, version 1 the champion, registered with its reference and contract."""
    return register_churn(tmp_path_factory.mktemp("score"), make_churn_dataset(rows=1500, seed=21))


@pytest.fixture(scope="module")
def bundle(registry):
    return load_bundle(registry / "churn" / "versions" / "1")


def batch(rows: int = ROWS, seed: int = 5) -> pd.DataFrame:
    """New customers to score: the model's inputs and a text key with leading zeros."""
    frame = make_churn_dataset(rows=rows, seed=seed).drop(columns=["churned"])
    frame.insert(0, "customer_id", [f"{i:07d}" for i in range(rows)])
    return frame


def champion(registry: Path) -> str:
    return f"{registry}/churn@champion"


def assert_predictions_equal(bundle, raw: pd.DataFrame, scored: pd.DataFrame) -> None:
    """Labels exactly; probabilities to the last bit or so: BLAS rounds a row's dot product
    differently with the batch's shape (bundle.predict on 999-row slices of a table differs
    from bundle.predict on the whole in the 17th digit of a row or two)."""
    expected = bundle.predict(raw.reset_index(drop=True))
    assert scored["prediction"].tolist() == expected.labels
    for index, label in enumerate(expected.classes):
        np.testing.assert_allclose(
            scored[f"proba_{label}"], expected.probabilities[:, index], rtol=1e-14, atol=1e-16
        )


def read_whole(source: Path) -> pd.DataFrame:
    """The plain way: the whole CSV at once, numbers read exactly as written."""
    return pd.read_csv(source, dtype={"customer_id": str}, float_precision="round_trip")


def parts(output: Path) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p) for p in sorted((output / "predictions").glob("part-*.parquet"))],
        ignore_index=True,
    )


def test_a_csv_file_is_scored_in_chunks_as_bundle_predict_scores_it(registry, bundle, tmp_path):
    raw = batch()
    source = tmp_path / "customers.csv"
    raw.to_csv(source, index=False)
    output = tmp_path / "scores"
    options = ScoreOptions(key_columns=["customer_id"], chunk_rows=700)
    summary = score_batch(champion(registry), str(source), str(output), options)

    files = sorted(p.name for p in (output / "predictions").iterdir())
    assert files == [f"part-{i:05d}.parquet" for i in range(5)]  # 3000 rows / 700 a chunk
    scored = parts(output)
    assert list(scored.columns) == ["customer_id", "prediction", "proba_no", "proba_yes",
                                    "model_name", "model_version", "scored_at"]  # fmt: skip
    assert scored["customer_id"].tolist() == raw["customer_id"].tolist()  # leading zeros kept
    whole = read_whole(source)
    assert_predictions_equal(bundle, whole.drop(columns=["customer_id"]), scored)
    assert set(scored["model_name"]) == {"churn"} and set(scored["model_version"]) == {"1"}
    assert scored["scored_at"].nunique() == 1 and str(scored["scored_at"].dt.tz) == "UTC"

    manifest = json.loads((output / SUMMARY_FILE).read_text())
    assert manifest == json.loads(json.dumps(summary))
    assert manifest["rows"] == {"read": ROWS, "scored": ROWS, "quarantined": 0,
                                "quarantined_share": 0.0}  # fmt: skip
    assert manifest["model"]["uri"] == str(registry / "churn" / "versions" / "1")
    assert manifest["model"]["sha256"] == bundle.metadata["sha256"]
    (read,) = manifest["inputs"]
    assert read["uri"] == str(source) and read["bytes"] == source.stat().st_size
    assert read["sha256"] == __import__("hashlib").sha256(source.read_bytes()).hexdigest()
    assert [p["rows"] for p in manifest["predictions"]] == [700, 700, 700, 700, 200]
    assert manifest["quarantine"] is None and not (output / QUARANTINE_FILE).exists()
    assert {"load_model", "read", "check", "predict", "write", "drift", "total"} <= set(
        manifest["timings_seconds"]
    )
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_a_partitioned_directory_is_read_whole_and_rows_are_numbered(registry, bundle, tmp_path):
    raw = batch(1000, seed=8).drop(columns=["customer_id"])
    data = tmp_path / "data"
    for day, rows in (("2026-01-01", raw.iloc[:400]), ("2026-01-02", raw.iloc[400:])):
        (data / f"day={day}").mkdir(parents=True)
        rows.to_parquet(data / f"day={day}" / "part-0.parquet", index=False)
    (data / "_SUCCESS").write_text("")
    (data / "day=2026-01-01" / ".part-0.parquet.crc").write_text("crc")
    output = tmp_path / "out"
    output.mkdir()  # an empty directory is a fine output
    summary = score_batch(champion(registry), str(data), str(output), ScoreOptions(chunk_rows=300))
    assert [Path(i["uri"]).parent.name for i in summary["inputs"]] == [
        "day=2026-01-01", "day=2026-01-02"]  # fmt: skip
    assert [i["rows"] for i in summary["inputs"]] == [400, 600]
    scored = parts(output)
    assert scored["row"].tolist() == list(range(1000))  # numbered across the files
    assert_predictions_equal(bundle, raw, scored)


def test_an_s3_prefix_is_scored_into_an_s3_prefix(registry, bundle, tmp_path, monkeypatch):
    raw = batch(900, seed=9)
    with running_moto() as moto:
        for name, value in moto.env().items():
            monkeypatch.setenv(name, value)
        client = moto.client()
        bucket = new_bucket(client)
        for index, rows in enumerate((raw.iloc[:500], raw.iloc[500:])):
            path = tmp_path / f"{index}.parquet"
            rows.to_parquet(path, index=False)
            upload_file(client, path, bucket, f"in/2026-01-0{index + 1}/{index}.parquet")
        (tmp_path / "_SUCCESS").write_text("")
        upload_file(client, tmp_path / "_SUCCESS", bucket, "in/_SUCCESS")
        options = ScoreOptions(key_columns=["customer_id"], chunk_rows=400)
        summary = score_batch(
            champion(registry), f"s3://{bucket}/in", f"s3://{bucket}/out", options
        )

        keys = list_keys(client, bucket, "out/")
        assert keys == [
            "out/predictions/part-00000.parquet",
            "out/predictions/part-00001.parquet",
            "out/predictions/part-00002.parquet",  # 500 rows: 400 + 100; 400
            "out/scoring-summary.json",
        ]  # no staging left behind
        local = tmp_path / "fetched"
        for key in keys:
            client.fget_object(bucket, key, str(local / key.removeprefix("out/")))
        scored = parts(local)
        assert scored["customer_id"].tolist() == raw["customer_id"].tolist()
        assert_predictions_equal(bundle, raw.drop(columns=["customer_id"]), scored)
        assert summary["output"] == f"s3://{bucket}/out"
        assert [i["uri"] for i in summary["inputs"]] == [
            f"s3://{bucket}/in/2026-01-01/0.parquet",
            f"s3://{bucket}/in/2026-01-02/1.parquet",
        ]
        manifest = json.loads((local / SUMMARY_FILE).read_text())
        assert manifest["rows"]["scored"] == 900
        with pytest.raises(DataError, match="already holds scoring output"):
            score_batch(champion(registry), f"s3://{bucket}/in", f"s3://{bucket}/out", options)


def broken(raw: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """Three ways a row breaks the schema, one per row in turn; as text, as in a CSV."""
    frame = raw.astype(object)
    kinds = [("age", "old"), ("signup_date", "not a date"), ("plan", "platinum")]
    for position, row in enumerate(rows):
        column, value = kinds[position % 3]
        frame.loc[row, column] = value
    return frame


def test_rows_that_break_the_schema_are_quarantined_with_their_reason(registry, bundle, tmp_path):
    raw = batch()
    bad = [5, 1400, 2999]
    source = tmp_path / "customers.csv"
    broken(raw, bad).to_csv(source, index=False)
    output = tmp_path / "out"
    options = ScoreOptions(key_columns=["customer_id"], chunk_rows=1000)
    summary = score_batch(champion(registry), str(source), str(output), options)

    assert summary["rows"] == {"read": ROWS, "scored": ROWS - 3, "quarantined": 3,
                               "quarantined_share": 0.001}  # fmt: skip
    quarantine = pd.read_parquet(output / QUARANTINE_FILE)
    assert quarantine["customer_id"].tolist() == [f"{row:07d}" for row in bad]
    assert quarantine["reason"].tolist() == [
        "field 'age': expected a number, got 'old'",
        "field 'signup_date': expected an ISO 8601 date-time string, got 'not a date'",
        "field 'plan': category 'platinum' was never seen in training",
    ]
    assert quarantine.loc[0, "age"] == "old"  # the row as it came, for whoever fixes it
    scored = parts(output)
    good = read_whole(source).drop(index=bad)
    assert scored["customer_id"].tolist() == good["customer_id"].tolist()
    assert_predictions_equal(bundle, good.drop(columns=["customer_id"]), scored)


def test_above_the_allowed_share_of_bad_rows_nothing_is_published(registry, tmp_path):
    raw = batch(1000)
    source = tmp_path / "customers.csv"
    broken(raw, list(range(0, 1000, 50))).to_csv(source, index=False)  # 20 rows: 2%
    output = tmp_path / "out"
    with pytest.raises(ScoringFailed) as failed:
        score_batch(champion(registry), str(source), str(output), ScoreOptions(chunk_rows=300))
    message = str(failed.value)
    assert "20 of 1000 rows (2.00%) break the model's input schema, above the allowed 1.00%" in (
        message
    )
    assert "nothing was published" in message and "field 'age': expected a number" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers.csv"]  # no staging left
    summary = score_batch(
        champion(registry),
        str(source),
        str(output),
        ScoreOptions(chunk_rows=300, max_quarantine_share=0.05),
    )
    assert summary["rows"]["quarantined"] == 20 and (output / QUARANTINE_FILE).is_file()


def test_progress_is_logged_with_rows_rate_and_eta(registry, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(score_module, "PROGRESS_SECONDS", 0.0)  # every chunk, for the test
    source = tmp_path / "customers.parquet"
    batch(1000).to_parquet(source, index=False)
    with caplog.at_level(logging.INFO, logger="kfp_lifecycle.components.score"):
        options = ScoreOptions(chunk_rows=250)
        score_batch(champion(registry), str(source), str(tmp_path / "out"), options)
    lines = [r.getMessage() for r in caplog.records]
    progress = [line for line in lines if line.startswith("scored ")]
    assert re.fullmatch(r"scored 250 rows \(\d+ rows/s, 25% of the input, ETA \d+ s\)", progress[0])
    assert re.fullmatch(r"scored 1000 rows \(\d+ rows/s, 100% of the input\)", progress[-1])
    assert lines[-1] == f"published 1000 scored rows (0 quarantined) to {tmp_path / 'out'}"


def test_check_rows_names_every_bad_field_of_every_kind():
    schema = InputSchema(
        [
            ColumnSpec("n", "numeric", "float64", True),
            ColumnSpec("b", "boolean", "bool", True),
            ColumnSpec("d", "datetime", "datetime64[ns]", True),
            ColumnSpec("c", "categorical", "object", True, ["a", "b"]),
        ]
    )
    frame = pd.DataFrame(
        {
            "n": ["1.5", "x", None, "2"],
            "b": [True, "yes", False, None],
            "d": ["2024-01-01", "2024-02-01", "soon", None],
            "c": ["a", "z", None, "b"],
        }
    )
    coerced, reasons = schema.check_rows(frame)
    assert reasons.tolist() == [
        "",
        "field 'n': expected a number, got 'x'; field 'b': expected true or false, got 'yes'; "
        "field 'c': category 'z' was never seen in training",
        "field 'd': expected an ISO 8601 date-time string, got 'soon'",
        "",
    ]
    assert coerced.loc[0, "n"] == 1.5 and coerced.loc[3, "n"] == 2.0
    assert coerced["b"].tolist()[0] == 1.0 and pd.isna(coerced.loc[1, "b"])


# Same moves as tests/test_drift.py's drifted rows, but within known categories: a
# category training never saw would be quarantined before it could count as drift.
def drifted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["tenure_months"] += 36
    frame["monthly_charges"] *= 1.5
    frame["support_calls"] += 3
    frame["contract"] = "month-to-month"
    frame["region"] = "north"
    return frame


def test_the_drift_verdict_is_that_of_lifecycle_drift_on_the_same_rows(registry, bundle, tmp_path):
    source = tmp_path / "customers.csv"
    drifted(batch(2000, seed=12)).to_csv(source, index=False)
    summary = score_batch(
        champion(registry), str(source), str(tmp_path / "out"), ScoreOptions(chunk_rows=500)
    )
    # what `lifecycle drift` computes on the file (drift_run.run_drift, less its HTML report)
    metadata = bundle.metadata
    current = read_current([str(source)], bundle.schema)
    expected = detect_drift(
        reference_frame(metadata), current, schema=bundle.schema, contract=metadata["contract"]
    )
    drift = summary["drift"]
    assert drift["checked"] and drift["sample_rows"] == 2000
    assert drift["dataset_drift"] is True
    assert drift["drifted_features"] == expected.drifted
    assert {"tenure_months", "monthly_charges", "support_calls", "contract", "region"} <= set(
        drift["drifted_features"]
    )
    assert {(f["column"], f["check"]) for f in summary["contract_breaches"]} == {
        (f["column"], f["check"]) for f in expected.contract
    }
    with pytest.raises(ScoringFailed, match="fail_on_drift is set; nothing was published"):
        score_batch(
            champion(registry),
            str(source),
            str(tmp_path / "refused"),
            ScoreOptions(fail_on_drift=True),
        )
    assert not (tmp_path / "refused").exists()


KILLED_RUN = """
import os, signal, sys
from kfp_lifecycle.components import score

def killed_after(stored):
    def store_then_die(self, name):
        stored(self, name)
        os.kill(os.getpid(), signal.SIGKILL)  # right after the first part is stored
    return store_then_die

for sink in (score._LocalSink, score._S3Sink):
    sink.stored = killed_after(sink.stored)
score.score_batch(sys.argv[1], sys.argv[2], sys.argv[3], score.ScoreOptions(chunk_rows=100))
"""


def kill_mid_run(model: str, data: str, output: str, env: dict | None = None) -> None:
    script = textwrap.dedent(KILLED_RUN)
    done = subprocess.run(
        [sys.executable, "-c", script, model, data, output],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr  # killed, not finished nor failed


def test_a_run_killed_mid_way_leaves_no_complete_looking_output(registry, tmp_path, monkeypatch):
    source = tmp_path / "customers.csv"
    batch(1000).to_csv(source, index=False)
    output = tmp_path / "scores"
    kill_mid_run(champion(registry), str(source), str(output))
    assert not output.exists()
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".scores.staging-")]
    assert [p.name for p in (staging / "predictions").iterdir()] == ["part-00000.parquet"]
    assert not (staging / SUMMARY_FILE).exists()  # it died mid-way, after a part
    # the same on S3: the part is under a hidden staging prefix, no manifest, no predictions/
    with running_moto() as moto:
        for name, value in moto.env().items():
            monkeypatch.setenv(name, value)
        client = moto.client()
        bucket = new_bucket(client)
        kill_mid_run(champion(registry), str(source), f"s3://{bucket}/scores", moto.env())
        keys = list_keys(client, bucket, "")
        assert len(keys) == 1 and keys[0].startswith("scores/_staging-"), keys
        assert keys[0].endswith("/predictions/part-00000.parquet")
        # and the next run is not blocked by the leftovers
        summary = score_batch(champion(registry), str(source), f"s3://{bucket}/scores")
        assert summary["rows"]["scored"] == 1000


def test_lifecycle_score_runs_the_pipeline_through_kfp_local(registry, tmp_path, capsys):
    source = tmp_path / "customers.csv"
    broken(batch(1200), [10]).to_csv(source, index=False)
    output = tmp_path / "scores"
    argv = ["score", "--model", champion(registry), "--data", str(source), "--output",
            str(output), "--key", "customer_id", "--chunk-rows", "500"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "scored 1199 of 1200 rows with churn version 1" in printed
    assert f"quarantined 1 rows (0.08%): {output}/quarantine.parquet" in printed
    assert "no dataset drift" in printed
    assert f"manifest: {output}/scoring-summary.json" in printed
    manifest = json.loads((output / SUMMARY_FILE).read_text())
    assert [p["rows"] for p in manifest["predictions"]] == [499, 500, 200]
    # a second run into the same output is refused before any step starts
    assert cli.main(argv) == 2
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    bad = ["score", "--model", f"{registry}/churn@nightly", "--data", str(source),
           "--output", str(tmp_path / "other")]  # fmt: skip
    assert cli.main(bad) == 2
    assert "model 'churn' has no alias 'nightly'" in capsys.readouterr().err
    # too many bad rows: the step fails with its reason in one line, and publishes nothing
    broken(batch(200), list(range(0, 200, 20))).to_csv(source, index=False)  # 5% bad
    failing = ["score", "--model", champion(registry), "--data", str(source), "--output",
               str(tmp_path / "refused")]  # fmt: skip
    assert cli.main(failing) == 2
    assert "step 'score' failed: 10 of 200 rows (5.00%) break the model's input schema" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "refused").exists()


def test_the_compiled_scoring_pipeline_wiring():
    documents = list(yaml.safe_load_all((COMPILED_DIR / "scoring.yaml").read_text()))
    spec, platform = documents[0], documents[1]
    (task,) = spec["root"]["dag"]["tasks"].values()
    assert task["cachingOptions"] == {}  # reads the champion alias, writes outside KFP
    parameters = task["inputs"]["parameters"]
    for name in ("model", "data", "output", "options", "run_folder"):
        assert parameters[name] == {"componentInputParameter": name}
    assert parameters["run_name"] == {"runtimeValue": {"constant": "{{$.pipeline_job_name}}"}}
    outputs = spec["components"]["comp-score"]["outputDefinitions"]["artifacts"]
    assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert spec["root"]["outputDefinitions"]["artifacts"]["Output"]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-score"]["secretAsEnv"][0]["secretName"] == S3_SECRET
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "model", "data", "output", "options", "run_folder"}  # fmt: skip


def test_submit_and_schedule_scoring(monkeypatch, capsys):
    from types import SimpleNamespace
    from unittest import mock

    from kfp_lifecycle import submit

    fake = mock.Mock()
    fake.create_run_from_pipeline_package.return_value = SimpleNamespace(run_id="run-7")
    fake.create_experiment.return_value = SimpleNamespace(experiment_id="exp-1")
    fake.create_recurring_run.return_value = SimpleNamespace(recurring_run_id="rec-1")
    monkeypatch.setattr(submit, "client", lambda host, namespace: fake)
    params = ["--param", "model=s3://models/churn@champion", "--param",
              "data=s3://lake/customers/", "--param", "output=s3://lake/scores",
              "--param", 'options={"key_columns": ["customer_id"]}']  # fmt: skip
    assert cli.main(["submit", "scoring", "--host", "http://kfp", *params]) == 0
    arguments = {
        "model": "s3://models/churn@champion",
        "data": "s3://lake/customers/",
        "output": "s3://lake/scores",
        "options": {"key_columns": ["customer_id"]},
    }
    fake.create_run_from_pipeline_package.assert_called_once_with(
        str(COMPILED_DIR / "scoring.yaml"),
        arguments=arguments,
        experiment_name="kfp-lifecycle",
        namespace=None,
    )
    nightly = ["schedule", "scoring", "--host", "http://kfp", "--cron", "0 0 2 * * *",
               "--name", "nightly-scores", *params, "--param", "run_folder=true"]  # fmt: skip
    assert cli.main(nightly) == 0
    fake.create_recurring_run.assert_called_once_with(
        experiment_id="exp-1",
        job_name="nightly-scores",
        cron_expression="0 0 2 * * *",
        pipeline_package_path=str(COMPILED_DIR / "scoring.yaml"),
        params={**arguments, "run_folder": True},
        no_catchup=True,
    )
    assert cli.main(["submit", "scoring", "--host", "http://kfp", "--param", "target=x"]) == 2
    assert "the scoring pipeline has no parameter(s) target" in capsys.readouterr().err


def test_batches_take_the_compiled_path_and_match_the_sklearn_pipeline(bundle, monkeypatch):
    """predict_chunk predicts checked rows through the compiled pipeline (the server's fast
    path), with the sklearn pipeline's answers: missing values and unseen categories too."""
    assert bundle.compiled is not None
    raw = batch(rows=500, seed=9)
    raw.loc[::7, "plan"] = None
    raw.loc[::11, "plan"] = "a plan nobody sold"
    raw.loc[::5, "tenure_months"] = np.nan
    features, _ = bundle.schema.check_rows(raw)
    calls = []
    compiled = type(bundle.compiled)
    real = compiled.predict_proba
    monkeypatch.setattr(compiled, "predict_proba", lambda self, c: calls.append(1) or real(self, c))
    scored = predict_chunk(bundle, features)
    assert calls == [1]
    assert_predictions_equal(bundle, features, scored)
