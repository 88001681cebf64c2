"""The Dask engine (kfp_lifecycle/dask_engine) against the pandas engine, on one LocalCluster.

The cluster (2 thread workers, tcp on 127.0.0.1) is shared by every test: the in-process
functions use it through open_client(scheduler_address=...), and so do the steps of the
pipeline run, each a separate process under kfp.local. Tolerance for the champion's test
metrics between the engines: the two engines split the same rows differently (seeded hash
vs. sklearn's shuffle: same sizes, other rows), so on 1,200 rows ROC-AUC may differ by
sampling noise; TOLERANCE is about two standard errors of ROC-AUC on 240 test rows.
"""

import io
import json
import logging

import numpy as np
import pandas as pd
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin
from s3_server import MotoS3, new_bucket

from kfp_lifecycle import cli
from kfp_lifecycle.components.clean import clean_table
from kfp_lifecycle.components.ingest import read_table
from kfp_lifecycle.components.preprocess import PreprocessOptions, fit_preprocessor
from kfp_lifecycle.components.split import SplitOptions, split_table
from kfp_lifecycle.components.validate import infer_contract, validate_table
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.core.errors import DataError, LifecycleError
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.dask_engine import engine as engines
from kfp_lifecycle.dask_engine import steps
from kfp_lifecycle.dask_engine.cluster import open_client
from kfp_lifecycle.dask_engine.engine import DaskSettings
from kfp_lifecycle.dask_engine.ingest import ingest_table
from kfp_lifecycle.local_run import run_training

TARGET = "churned"
TOLERANCE = 0.08


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, host="127.0.0.1", protocol="tcp",
        dashboard_address=None,
    ) as running:  # fmt: skip
        yield running


class Recorder(SchedulerPlugin):
    """What a scheduler saw while it was recorded: the clients that connected and the keys
    of the tasks that finished (a SchedulerPlugin on the test's own LocalCluster)."""

    def __init__(self):
        super().__init__()
        self.clients: list[str] = []
        self.keys: list[str] = []

    def add_client(self, scheduler, client):
        self.clients.append(client)

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "memory":
            self.keys.append(str(key))


@pytest.fixture
def recorded(cluster):
    """A Recorder on the shared cluster's scheduler for one test."""
    recorder = Recorder()
    cluster.scheduler.add_plugin(recorder, name="recorder")
    yield recorder
    cluster.scheduler.remove_plugin(name="recorder")


@pytest.fixture(scope="module")
def settings(cluster) -> DaskSettings:
    return DaskSettings(scheduler_address=cluster.scheduler_address, partition_size="20kB")


@pytest.fixture(scope="module")
def options(settings) -> dict:
    return settings.model_dump()


@pytest.fixture(scope="module")
def table(churn) -> pd.DataFrame:
    """The churn table with 6 repeated rows and 4 rows without a target, for clean."""
    frame = pd.concat([churn, churn.head(6)], ignore_index=True)
    frame.loc[[10, 20, 30, 40], TARGET] = None
    return frame


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, table, settings):
    """The table as two CSV files in a directory, ingested as partitioned Parquet."""
    root = tmp_path_factory.mktemp("dask-ingest")
    (root / "source").mkdir()
    table.iloc[:700].to_csv(root / "source" / "a.csv", index=False)
    table.iloc[700:].to_csv(root / "source" / "b.csv", index=False)
    with open_client(settings):
        stored = ingest_table(str(root / "source"), root / "table", settings)
    return root, stored


def test_engine_in_config_cli_and_auto(tmp_path, monkeypatch):
    assert parse_config({}).engine == "pandas"
    assert parse_config({"engine": "auto", "dask": {"n_workers": 3}}).dask.n_workers == 3
    with pytest.raises(LifecycleError, match="engine"):
        parse_config({"engine": "spark"})
    args = cli.build_parser().parse_args(["run", "training", "--engine", "dask"])
    assert cli.training_config(args).engine == "dask"

    small = tmp_path / "small.parquet"
    pd.DataFrame({"x": range(50), "y": [0, 1] * 25}).to_parquet(small)
    assert engines.measure(str(small))[0] == 50
    assert engines.resolve_engine("auto", small) == "pandas"
    monkeypatch.setattr(engines, "AUTO_DASK_ROWS", 50)
    assert engines.resolve_engine("auto", small) == "dask"
    assert engines.resolve_engine("pandas", small) == "pandas"
    with pytest.raises(DataError, match="unknown engine 'spark'"):
        engines.resolve_engine("spark", small)
    # a pod pointed at a cluster by its environment (the Kubernetes path)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://scheduler:8786")
    assert engines.settings_from({}).scheduler_address == "tcp://scheduler:8786"
    given = {"scheduler_address": "tcp://other:8786"}
    assert engines.settings_from(given).scheduler_address == "tcp://other:8786"
    # a step's dask_scheduler parameter (training-dask's cluster) comes before both
    chosen = engines.settings_from(given, "tcp://cluster:8786").scheduler_address
    assert chosen == "tcp://cluster:8786"
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    assert engines.settings_from({}, "").scheduler_address is None  # a LocalCluster


def test_open_client_connects_to_the_given_scheduler(settings, cluster, monkeypatch):
    from kfp_lifecycle.dask_engine import cluster as clusters

    monkeypatch.setattr(clusters, "CONNECT_TIMEOUT", "2s")  # refused at once; retried until then
    with open_client(settings) as client:
        assert client.scheduler.address == cluster.scheduler_address
        assert len(client.scheduler_info()["workers"]) == 2
    unreachable = DaskSettings(scheduler_address="tcp://127.0.0.1:1")
    with pytest.raises(LifecycleError, match="cannot reach the Dask scheduler"):
        open_client(unreachable).__enter__()


def test_ingest_reads_a_directory_as_partitions(ingested, table):
    root, stored = ingested
    files = sorted((root / "table").glob("*.parquet"))
    assert stored["rows"] == len(table) and stored["columns"] == table.shape[1]
    assert stored["partitions"] == len(files) > 2  # two files, cut into 20 kB blocks
    back = pd.read_parquet(root / "table")  # pandas reads the partitions as one table
    assert len(back) == len(table) and list(back.columns) == list(table.columns)
    assert back["tenure_months"].sum() == pytest.approx(table["tenure_months"].sum())
    (root / "mixed").mkdir()
    (root / "mixed" / "a.csv").write_text("x,y\n1,2\n")
    (root / "mixed" / "b.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="mixes CSV and Parquet"):
        ingest_table(str(root / "mixed"), root / "out", DaskSettings())


def test_ingest_reads_an_s3_prefix_as_partitions(table, settings, tmp_path, monkeypatch):
    server = MotoS3()  # stopped below; Dask's worker threads outlive running_moto's check
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)  # the thread workers read the same environment
        client = server.client()
        bucket = new_bucket(client)
        for number, rows in enumerate((table.iloc[:500], table.iloc[500:])):
            local = tmp_path / f"{number}.csv"
            rows.to_csv(local, index=False)
            client.fput_object(bucket, f"raw/part-{number}.csv", str(local))
        client.put_object(bucket, "raw/README.md", io.BytesIO(b"not data"), 8)
        with open_client(settings):
            stored = ingest_table(f"s3://{bucket}/raw/", tmp_path / "table", settings)
        assert (stored["rows"], stored["partitions"]) == (len(table), 2)  # one per object
        assert len(stored["sha256"]) == 64
        back = pd.read_parquet(tmp_path / "table")
        assert back["tenure_months"].sum() == pytest.approx(table["tenure_months"].sum())
        with pytest.raises(DataError, match=r"no \.csv or \.parquet object"):
            ingest_table(f"s3://{bucket}/nothing/", tmp_path / "none", settings)
    finally:
        server.stop()


def test_contract_and_validation_agree_with_pandas(ingested, options):
    root, _ = ingested
    result, findings, contract = steps.validate(
        str(root / "table"), TARGET, "auto", "auto", "", "", options
    )
    reference = infer_contract(pd.read_parquet(root / "table"), TARGET)
    assert (result.task, result.primary_metric, findings) == (CLASSIFICATION, "roc_auc", [])
    assert contract["rows"] == reference["rows"]
    assert contract["columns"] == reference["columns"]  # kinds, null rates, ranges, categories
    assert contract["sampled"]["sampled_rows"] == reference["rows"]  # small: all rows
    assert any("missing in 4 row(s)" in warning for warning in result.warnings)


def test_dask_validate_resolves_the_positive_class_as_pandas_does(ingested, options):
    """Unset: the minority class, from every row's count; set: that class, matched as text;
    a class the target lacks, or a positive class for regression: the same one-line error."""
    root, _ = ingested
    frame = pd.read_parquet(root / "table")
    counts = frame[TARGET].value_counts()
    minority, majority = counts.idxmin(), counts.idxmax()

    def both(target: str, task: str, positive_class: str) -> tuple:
        on_dask, _, _ = steps.validate(str(root / "table"), target, task, "auto", "", "",
                                       options, positive_class=positive_class)  # fmt: skip
        on_pandas = validate_table(frame, target, task, "auto", positive_class)
        return on_dask.positive_class, on_pandas.positive_class

    assert both(TARGET, "auto", "") == (minority, minority)
    assert both(TARGET, "auto", majority) == (majority, majority)
    for target, task, positive_class in (
        (TARGET, "auto", "maybe"),
        ("tenure_months", "regression", "1"),
    ):
        with pytest.raises(DataError) as pandas_error:
            validate_table(frame, target, task, "auto", positive_class)
        with pytest.raises(DataError) as dask_error:
            steps.validate(str(root / "table"), target, task, "auto", "", "", options,
                           positive_class=positive_class)  # fmt: skip
        assert str(dask_error.value) == str(pandas_error.value)
        assert f"positive_class '{positive_class}'" in str(dask_error.value)


def test_dask_training_puts_the_positive_class_last_as_pandas_does(ingested, settings):
    """The class validate resolved is index 1 of a binary model on both Dask paths (xgboost
    distributed, the other families on a sample), as with pandas; unset, the minority."""
    from kfp_lifecycle.components.train import train_model
    from kfp_lifecycle.components.tune import TuneOptions
    from kfp_lifecycle.dask_engine.tables import read_dataset
    from kfp_lifecycle.dask_engine.train import train_distributed, train_on_sample

    root, _ = ingested
    frame = pd.read_parquet(root / "table").dropna(subset=[TARGET])
    counts = frame[TARGET].value_counts()
    minority, majority = counts.idxmin(), counts.idxmax()
    fitted, schema, _ = fit_preprocessor(frame, TARGET, CLASSIFICATION)
    untuned = TuneOptions(enabled=False)
    common = (TARGET, CLASSIFICATION)
    reference = train_model(frame, frame, *common, "linear", fitted, schema, positive=majority)
    assert reference.metadata["classes"][-1] == majority
    with open_client(settings):
        rows = read_dataset(root / "table").dropna(subset=[TARGET])
        few_trees = {"n_estimators": 5}
        for positive, expected in ((majority, majority), (None, minority)):
            boosted, _ = train_distributed(
                rows, rows, *common, fitted, schema, "roc_auc", untuned, settings,
                base_params=few_trees, positive=positive,
            )  # fmt: skip
            assert boosted.metadata["classes"][-1] == expected
        sampled, _ = train_on_sample(rows, rows, *common, "linear", fitted, schema, "roc_auc",
                                     untuned, settings, positive=majority)  # fmt: skip
    assert sampled.metadata["classes"] == reference.metadata["classes"]
    assert set(boosted.metadata["classes"]) == set(reference.metadata["classes"])


def test_a_steps_dask_scheduler_is_where_its_work_runs(
    ingested, cluster, recorded, tmp_path, monkeypatch
):
    """The clean component's dask_scheduler parameter (as training-dask passes its cluster's
    address) is where its tasks run, ahead of dask_options' address; an unreachable one
    fails in one line naming it."""
    from kfp.dsl import Artifact, Dataset

    from kfp_lifecycle.components.clean import clean
    from kfp_lifecycle.dask_engine import cluster as clusters

    root, _ = ingested
    unreachable = "tcp://127.0.0.1:1"

    def run(name: str, dask_options: dict, dask_scheduler: str) -> None:
        clean.python_func(
            dataset=Dataset(uri=str(root / "table")), target=TARGET,
            cleaned=Dataset(uri=str(tmp_path / name)),
            report=Artifact(uri=str(tmp_path / f"{name}.json")), engine="dask",
            dask_options=dask_options, dask_scheduler=dask_scheduler,
        )  # fmt: skip

    run("cleaned", {"scheduler_address": unreachable}, cluster.scheduler_address)
    assert len(recorded.clients) == 1 and any("parquet" in key for key in recorded.keys)
    kept = pd.read_parquet(tmp_path / "cleaned")
    assert len(kept) == json.loads((tmp_path / "cleaned.json").read_text())["rows_out"]

    monkeypatch.setattr(clusters, "CONNECT_TIMEOUT", "2s")
    with pytest.raises(LifecycleError) as error:
        run("again", {"scheduler_address": cluster.scheduler_address}, unreachable)
    message = str(error.value)
    assert message.startswith(f"cannot reach the Dask scheduler at {unreachable}: ")
    assert "\n" not in message and len(recorded.clients) == 1


@pytest.mark.pipeline
def test_training_dask_runs_its_steps_on_the_clusters_scheduler(
    ingested, cluster, recorded, tmp_path
):
    """kfp.local runs training-dask given this cluster (dask_cluster=<address>: nothing is
    created on Kubernetes): the cluster step's output reaches the nested pipeline's steps,
    whose work runs on this scheduler. A target the table lacks fails the steps after
    ingest (clean and validate), each having connected there first (cheap: no training)."""
    from kfp_lifecycle.errors import StepFailed
    from kfp_lifecycle.local_run import run_local
    from kfp_lifecycle.pipelines.training_dask import training_dask_pipeline

    root, _ = ingested
    arguments = {
        "data": str(root / "source"),  # a directory of CSV files: only dask reads it
        "target": "no_such_column",
        "registry": str(tmp_path / "registry"),
        "model_name": "churn",
        "dask_cluster": cluster.scheduler_address,
    }
    with pytest.raises(StepFailed, match=r"step '\w+' failed: target column 'no_such_column'"):
        run_local(training_dask_pipeline, arguments, tmp_path / "run", tmp_path / "run.log")
    log = (tmp_path / "run.log").read_text()
    connected = log.count(f"dask: connected to {cluster.scheduler_address}")
    assert connected == len(recorded.clients) >= 2  # ingest, and each Dask step after it
    assert any("write_part" in key for key in recorded.keys)  # ingest wrote its partitions


def test_clean_and_split_match_pandas(ingested, options, tmp_path):
    root, _ = ingested
    frame = pd.read_parquet(root / "table")
    report = steps.clean(str(root / "table"), TARGET, str(tmp_path / "clean"), None, options)
    kept, expected = clean_table(frame, TARGET)
    assert report.to_dict() == expected.to_dict()  # counts and example rows, exactly
    assert len(pd.read_parquet(tmp_path / "clean")) == len(kept)

    for strategy in ({}, {"strategy": "time", "time_column": "signup_date"}):
        split_options = SplitOptions(**strategy)
        names = {n: str(tmp_path / f"{len(strategy)}{n}") for n in ("train", "validation", "test")}
        found = steps.split(str(tmp_path / "clean"), TARGET, CLASSIFICATION, names,
                            split_options, options)  # fmt: skip
        reference = split_table(kept, TARGET, CLASSIFICATION, split_options).report
        assert found.rows == reference.rows and found.class_shares == reference.class_shares
        assert found.boundaries == reference.boundaries
        parts = {n: pd.read_parquet(path) for n, path in names.items()}
        hashed = {n: set(pd.util.hash_pandas_object(p, index=False)) for n, p in parts.items()}
        assert not hashed["train"] & hashed["test"] and not hashed["train"] & hashed["validation"]
    # a group split never puts one group on two sides
    kept.assign(customer=np.arange(len(kept)) // 3).to_parquet(tmp_path / "grouped.parquet")
    groups = SplitOptions(strategy="group", group_column="customer")
    names = {n: str(tmp_path / f"g{n}") for n in ("train", "validation", "test")}
    steps.split(str(tmp_path / "grouped.parquet"), TARGET, CLASSIFICATION, names, groups, options)
    seen = [set(pd.read_parquet(path)["customer"]) for path in names.values()]
    assert all(not a & b for i, a in enumerate(seen) for b in seen[i + 1 :])


def test_preprocessor_is_the_pandas_kind_with_exact_numeric_statistics(
    ingested, settings, tmp_path
):
    root, _ = ingested
    frame = pd.read_parquet(root / "table").dropna(subset=[TARGET])
    frame.to_parquet(tmp_path / "train.parquet")
    options = PreprocessOptions(numeric_imputation="mean")
    fitted, _, report, sampling = steps.preprocess(
        str(tmp_path / "train.parquet"), TARGET, CLASSIFICATION, options,
        settings.model_copy(update={"sample_rows": 1_000}).model_dump(),
    )  # fmt: skip
    reference, _, _ = fit_preprocessor(frame, TARGET, CLASSIFICATION, options)
    assert type(fitted) is type(reference)
    names = list(reference.get_feature_names_out())
    assert list(fitted.get_feature_names_out()) == names
    numeric = [i for i, name in enumerate(names) if name.startswith("numeric__")]
    ours, theirs = fitted.transform(frame), reference.transform(frame)
    # the sample decided the rest, every row the numeric imputation and scaling
    assert sampling["sampled_rows"] < sampling["training_rows"] == report.training_rows
    np.testing.assert_allclose(ours[:, numeric], theirs[:, numeric], atol=1e-9)


def test_preprocess_refuses_isolation_forest(ingested, options):
    root, _ = ingested
    with pytest.raises(DataError, match="isolation_forest' is not available with engine dask"):
        steps.preprocess(str(root / "table"), TARGET, CLASSIFICATION,
                         PreprocessOptions(outliers="isolation_forest"), options)  # fmt: skip


@pytest.mark.pipeline
def test_training_pipeline_on_dask_agrees_with_pandas(tmp_path, churn, settings, capfd):
    data = tmp_path / "data.csv"
    churn.to_csv(data, index=False)
    summary = run_training(
        parse_config({
            "data": {"source": str(data), "target": TARGET},
            "output": str(tmp_path / "run"),
            "engine": "dask",
            "dask": {"scheduler_address": settings.scheduler_address},
            "models": {"families": ["xgboost", "linear"], "tune": {"enabled": False}},
            "gate": {"primary_threshold": 0.5},
        })
    )  # fmt: skip
    log = capfd.readouterr().out
    for step in ("ingest", "clean", "split train", "preprocess", "train xgboost (dask)"):
        assert f"{step}" in log and "partition" in log  # progress, in the steps' logs
    assert set(summary["leaderboard"]) == {"xgboost", "linear"}
    bundle = load_bundle(summary["model_uri"])
    assert bundle.metadata["engine"] == "dask"
    assert type(bundle.pipeline).__name__ == "Pipeline"  # the same kind as with pandas
    assert len(bundle.predict(churn.drop(columns=[TARGET]).head(5)).labels) == 5

    # the pandas engine on the same table: same split sizes, champion within TOLERANCE
    root = tmp_path / "run" / "pipeline-root"
    contract = json.loads(next(root.rglob("validate/contract")).read_text())
    assert contract["columns"] == infer_contract(read_table(data), TARGET)["columns"]
    split_report = json.loads(next(root.rglob("split/report")).read_text())
    reference = split_table(clean_table(churn, TARGET)[0], TARGET, CLASSIFICATION)
    assert split_report["rows"] == reference.report.rows
    fitted, schema, _ = fit_preprocessor(reference.train, TARGET, CLASSIFICATION)
    from kfp_lifecycle.components.evaluate import compute_metrics
    from kfp_lifecycle.components.train import train_model

    family = summary["champion"]
    pandas_model = train_model(reference.train, reference.validation, TARGET, CLASSIFICATION,
                               family, fitted, schema)  # fmt: skip
    test = reference.test
    expected = compute_metrics(CLASSIFICATION, test[TARGET].tolist(),
                               pandas_model.predict(test.drop(columns=[TARGET])))  # fmt: skip
    assert abs(summary["metrics"]["roc_auc"] - expected["roc_auc"]) <= TOLERANCE
