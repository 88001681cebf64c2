"""Canary analysis against a real Prometheus scraping two real model servers on localhost."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import joblib
import pytest
from bundles import build_bundle
from faulty_models import Failing, Slow
from server_process import free_port
from sklearn.pipeline import Pipeline
from test_deploy import FakeCustomObjects

from kfp_lifecycle import deploy
from kfp_lifecycle.bundle import MODEL_FILE, read_metadata, write_bundle
from kfp_lifecycle.canary import (
    PROMOTE,
    ROLLBACK,
    WAIT,
    CanaryOptions,
    RevisionStats,
    Verdict,
    analyse,
    judge,
    run_rollout,
)

pytestmark = pytest.mark.serving
PROMETHEUS = shutil.which("prometheus")
SCRAPE_SECONDS = 1


def _bundle(directory: Path, source: Path, version: int, fault=None) -> Path:
    pipeline = joblib.load(source / MODEL_FILE)
    if fault is not None:
        pipeline = Pipeline([("fault", fault), *pipeline.steps])
    metadata = {**read_metadata(source), "registry_version": version, "model_name": "churn"}
    write_bundle(directory, pipeline, metadata)
    return directory


@pytest.fixture(scope="module")
def servers(tmp_path_factory, churn, start_server):
    source = build_bundle(tmp_path_factory.mktemp("source"), churn)
    bundles = {
        "1": _bundle(tmp_path_factory.mktemp("v1"), source, 1),
        "2": _bundle(tmp_path_factory.mktemp("v2"), source, 2),
        "3": _bundle(tmp_path_factory.mktemp("v3"), source, 3, Failing()),
        "4": _bundle(tmp_path_factory.mktemp("v4"), source, 4, Slow(0.25)),
    }
    return {version: start_server(path, "churn") for version, path in bundles.items()}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, servers):
    if PROMETHEUS is None:
        pytest.skip("Prometheus is not installed: apt-get install prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    targets = [f"127.0.0.1:{server.port}" for server in servers.values()]
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "models", "static_configs": [{"targets": targets}]}],
    }
    (directory / "prometheus.yml").write_text(json.dumps(config))  # YAML is a JSON superset
    port = free_port()
    with open(directory / "log", "wb") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"Prometheus did not start:\n{(directory / 'log').read_text()}")
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def traffic(servers, prometheus, churn):
    """Send the same requests to every server, then let Prometheus scrape twice more."""
    rows = json.loads(churn.drop(columns=["churned"]).head(5).to_json(orient="records"))
    with httpx.Client(timeout=30) as client:
        for _ in range(40):
            for server in servers.values():
                client.post(f"{server.url}/v1/models/churn:predict", json={"instances": rows})
    time.sleep(3 * SCRAPE_SECONDS)
    return prometheus


def _options(url: str) -> CanaryOptions:
    return CanaryOptions(prometheus_url=url, window="1m", min_requests=20)


def test_a_healthy_canary_is_promoted(traffic):
    verdict = analyse(_options(traffic), "churn", canary_version="2", stable_version="1")
    assert verdict.decision == PROMOTE, verdict.reasons
    assert verdict.canary.requests >= 20 and verdict.canary.error_rate == 0.0


def test_a_failing_canary_is_rolled_back(traffic):
    verdict = analyse(_options(traffic), "churn", canary_version="3", stable_version="1")
    assert verdict.decision == ROLLBACK
    assert verdict.canary.error_rate == pytest.approx(1.0)
    assert verdict.reasons[0].startswith("FAIL: error rate 100.00%")


def test_a_slow_canary_is_rolled_back(traffic):
    verdict = analyse(_options(traffic), "churn", canary_version="4", stable_version="1")
    assert verdict.decision == ROLLBACK
    assert verdict.canary.p99_seconds > 0.2 > verdict.stable.p99_seconds
    assert any(r.startswith("FAIL: p99 latency") for r in verdict.reasons)


def test_too_little_traffic_is_not_judged(traffic):
    verdict = analyse(_options(traffic), "churn", canary_version="9", stable_version="1")
    assert verdict.decision == WAIT


def _stats(version, error_rate):
    return RevisionStats(version, 100, error_rate, 0.01, 0.02)


def test_rollout_steps_then_promotes_or_rolls_back():
    """The driver: traffic stepped 10 -> 50, then promoted; a failed analysis rolls back."""
    for verdicts, outcome in ((["ok", "ok", "ok"], "promoted"), (["ok", "bad"], "rolled back")):
        fake = FakeCustomObjects()
        api = deploy.KServeApi(fake)
        for request in deploy.plan_deploy(deploy.ServiceSpec("churn", "s3://m/v/1/"), None):
            api.apply(request)
        existing = api.get("churn", "kfp-lifecycle")
        spec = deploy.ServiceSpec("churn", "s3://m/v/2/", canary_percent=10)
        for request in deploy.plan_deploy(spec, existing):
            api.apply(request)
        answers = iter(verdicts)

        def step(answers=answers):
            ok = next(answers) == "ok"
            return Verdict(PROMOTE if ok else ROLLBACK, [], _stats("2", 0.0), _stats("1", 0.0))

        options = CanaryOptions(steps=[10, 50, 100], interval_seconds=0)
        result = run_rollout(api, "churn", "kfp-lifecycle", options, step, sleep=lambda s: None)
        assert result.outcome == outcome
        final = api.get("churn", "kfp-lifecycle")["spec"]["predictor"]
        if outcome == "promoted":
            assert (
                "canaryTrafficPercent" not in final
                and final["model"]["storageUri"] == "s3://m/v/2/"
            )
        else:
            assert (
                final["canaryTrafficPercent"] == 0 and final["model"]["storageUri"] == "s3://m/v/1/"
            )


def test_judge_rules():
    options = CanaryOptions(max_error_rate=0.01, max_error_rate_increase=0.005)
    assert judge(_stats("2", 0.004), _stats("1", 0.0), options).decision == PROMOTE
    assert judge(_stats("2", 0.006), _stats("1", 0.0), options).decision == ROLLBACK
    # a stable revision that already errors does not make every canary fail
    assert judge(_stats("2", 0.02), _stats("1", 0.02), options).decision == PROMOTE
