"""Canary analysis against a real Prometheus scraping two real model servers on localhost."""

import json
import shutil
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from bundles import build_bundle
from faulty_models import Failing, Slow
from server_process import free_port, running_prometheus
from sklearn.pipeline import Pipeline
from test_deploy import FakeCustomObjects

from kfp_lifecycle import deploy
from kfp_lifecycle.canary import (
    PROMOTE,
    ROLLBACK,
    WAIT,
    CanaryOptions,
    RevisionStats,
    Verdict,
    analyse,
    judge,
    prediction_shift,
    run_rollout,
)
from kfp_lifecycle.core.bundle import MODEL_FILE, read_metadata, write_bundle
from kfp_lifecycle.core.errors import LifecycleError

pytestmark = pytest.mark.serving
PROMETHEUS = shutil.which("prometheus")
SCRAPE_SECONDS = 1


def _bundle(directory: Path, source: Path, version: int, fault=None, **metadata) -> Path:
    pipeline = joblib.load(source / MODEL_FILE)
    if fault is not None:
        pipeline = Pipeline([("fault", fault), *pipeline.steps])
    metadata = {
        **read_metadata(source), "registry_version": version, "model_name": "churn", **metadata
    }  # fmt: skip
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
        # healthy and fast, but a decision threshold of 0 labels every row positive
        "5": _bundle(tmp_path_factory.mktemp("v5"), source, 5, decision_threshold=0.0),
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
    with running_prometheus(PROMETHEUS, directory / "prometheus.yml", directory) as url:
        yield url


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


def _options(url: str, **limits) -> CanaryOptions:
    return CanaryOptions(prometheus_url=url, window="1m", min_requests=20, **limits)


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
    # every canary request sleeps 0.25 s; the stable's p99 depends on the machine's load
    assert verdict.canary.p99_seconds > max(0.2, verdict.stable.p99_seconds)
    assert any(r.startswith("FAIL: p99 latency") for r in verdict.reasons)


def test_too_little_traffic_is_not_judged(traffic):
    verdict = analyse(_options(traffic), "churn", canary_version="9", stable_version="1")
    assert verdict.decision == WAIT


def test_a_canary_predicting_another_class_mix_is_rolled_back_only_when_compared(traffic):
    off = analyse(_options(traffic), "churn", canary_version="5", stable_version="1")
    assert off.decision == PROMOTE, off.reasons  # errors and latency alone see nothing wrong
    on = analyse(_options(traffic, max_prediction_shift=0.2), "churn", "5", "1")
    assert on.decision == ROLLBACK, on.reasons
    assert set(on.canary.label_counts) == {"yes"} and "no" in on.stable.label_counts
    (reason,) = [r for r in on.reasons if "prediction shift" in r]
    assert reason.startswith("FAIL: prediction shift") and "canary yes 100% vs stable no" in reason
    same = analyse(_options(traffic, max_prediction_shift=0.2), "churn", "2", "1")
    assert same.decision == PROMOTE, same.reasons
    assert "pass: prediction shift 0.000" in "; ".join(same.reasons)


def _stats(version, error_rate, labels=None):
    return RevisionStats(version, 100, error_rate, 0.01, 0.02, labels or {})


NS = "kfp-lifecycle"
V1, V2 = "s3://m/v/1/", "s3://m/v/2/"
ROLLED_BACK = [
    {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
    {
        "metadata": {
            "annotations": {deploy.MODEL_VERSION_ANNOTATION: V1, deploy.PREVIOUS_STORAGE_URI: None}
        },
        "spec": {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": V1}}},
    },
]


def _canary():
    """v1 stable, v2 a canary at 10%; returns the API and the fake's write count so far."""
    fake = FakeCustomObjects()
    api = deploy.KServeApi(fake)
    for request in deploy.plan_deploy(deploy.ServiceSpec("churn", V1), None):
        api.apply(request)
    spec = deploy.ServiceSpec("churn", V2, canary_percent=10)
    for request in deploy.plan_deploy(spec, api.get("churn", NS)):
        api.apply(request)
    return api, len(fake.writes)


def _patches_since(api, count):
    writes = api.api.writes[count:]
    assert all(call[0] == "patch" and call[5] == "churn" for call in writes)
    return [call[-1] for call in writes]


def _traffic(percent):
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def _answers(*decisions):
    answers = iter(decisions)
    return lambda: Verdict(next(answers), [], _stats("2", 0.0), _stats("1", 0.0))


def test_rollout_steps_then_promotes_or_rolls_back():
    """The driver: traffic stepped 10 -> 50, then promoted; a failed analysis rolls back."""
    options = CanaryOptions(steps=[10, 50, 100], interval_seconds=0)
    api, before = _canary()
    step = _answers(PROMOTE, PROMOTE, PROMOTE)
    result = run_rollout(api, "churn", NS, options, step, sleep=lambda s: None, log=lambda m: None)
    assert result.outcome == "promoted"
    assert _patches_since(api, before) == [_traffic(10), _traffic(50), _traffic(None)]

    api, before = _canary()
    step = _answers(PROMOTE, ROLLBACK)
    result = run_rollout(api, "churn", NS, options, step, sleep=lambda s: None, log=lambda m: None)
    assert result.outcome == "rolled back"
    assert _patches_since(api, before) == [_traffic(10), _traffic(50), *ROLLED_BACK]


def test_the_last_step_says_traffic_stays_until_promotion():
    for steps, share in (([10, 50, 100], 50), ([100], 10)):  # [100]: the deploy's 10% stays
        api, _ = _canary()
        logs = []
        options = CanaryOptions(steps=steps, interval_seconds=0)
        run_rollout(
            api,
            "churn",
            NS,
            options,
            _answers(*[PROMOTE] * len(steps)),
            lambda s: None,
            logs.append,
        )
        steps_logged = [line for line in logs if not line.startswith("  ")]
        assert not any("canary at 100%" in line for line in logs)
        assert steps_logged[-1].startswith(f"canary stays at {share}% for a last analysis")
        assert "promotion sends it 100%" in steps_logged[-1]


def test_an_analysis_error_rolls_back_then_fails_with_the_reason():
    api, before = _canary()

    def broken():
        raise LifecycleError("Prometheus answered 503")

    options = CanaryOptions(steps=[10, 50, 100], interval_seconds=0)
    message = rf"stopped at 10%: Prometheus answered 503; rolled back: {V1} serves again"
    with pytest.raises(LifecycleError, match=message):
        run_rollout(api, "churn", NS, options, broken, sleep=lambda s: None, log=lambda m: None)
    assert _patches_since(api, before) == [_traffic(10), *ROLLED_BACK]


def test_prometheus_unreachable_rolls_the_canary_back():
    api, before = _canary()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    options = CanaryOptions(prometheus_url=url, steps=[25, 100], interval_seconds=0)
    with pytest.raises(
        LifecycleError, match=rf"stopped at 25%: Prometheus at {url} did not answer"
    ):
        run_rollout(
            api, "churn", NS, options, lambda: analyse(options, "churn", "2", "1"),
            sleep=lambda s: None, log=lambda m: None,
        )  # fmt: skip
    assert _patches_since(api, before) == [_traffic(25), *ROLLED_BACK]
    state = api.get("churn", NS)["spec"]["predictor"]
    assert (state["canaryTrafficPercent"], state["model"]["storageUri"]) == (0, V1)


def test_a_rollback_that_fails_too_says_how_to_roll_back_by_hand():
    from kubernetes.client.exceptions import ApiException

    api, before = _canary()

    def forbidden(*args):
        raise ApiException(status=403, reason="Forbidden")

    api.api.patch_namespaced_custom_object = forbidden
    options = CanaryOptions(steps=[10, 100], interval_seconds=0)
    with pytest.raises(LifecycleError) as raised:
        run_rollout(api, "churn", NS, options, _answers(PROMOTE), lambda s: None, lambda m: None)
    assert str(raised.value) == (
        f"canary rollout of {NS}/churn stopped at 10%: patch {NS}/churn failed: 403 Forbidden; "
        f"rolling back failed too (patch {NS}/churn failed: 403 Forbidden): roll back by hand "
        f"with `lifecycle rollout rollback --name churn --namespace {NS}`"
    )
    assert len(api.api.writes) == before


def test_a_rollout_needs_a_canary_in_progress():
    api, before = _canary()
    for request in deploy.plan_promote("churn", NS, api.get("churn", NS)):
        api.apply(request)
    with pytest.raises(LifecycleError, match="no canary in progress"):
        run_rollout(api, "churn", NS, CanaryOptions(), _answers(), lambda s: None, print)
    assert len(api.api.writes) == before + 1  # the promotion only


def test_steps_must_be_increasing_percentages():
    from pydantic import ValidationError

    for steps in ([50, 10], [0, 100], [10, 10, 100], [10, 120], []):
        with pytest.raises(ValidationError, match="increasing percentages"):
            CanaryOptions(steps=steps)


def _js_distance(p, q):
    """By the definition: the square root of the mean KL divergence (base 2) to the mixture."""
    p, q = np.asarray(p, float) / sum(p), np.asarray(q, float) / sum(q)
    m = (p + q) / 2

    def kl(x):
        return sum(xi * np.log2(xi / mi) for xi, mi in zip(x, m, strict=True) if xi > 0)

    return np.sqrt((kl(p) + kl(q)) / 2)


def test_prediction_shift_is_the_jensen_shannon_distance_of_label_shares():
    assert prediction_shift({"no": 30, "yes": 10}, {"no": 3, "yes": 1}) == pytest.approx(0.0)
    assert prediction_shift({"no": 5}, {"yes": 7}) == pytest.approx(1.0)
    # a class only the stable model predicts counts as 0 for the canary
    assert prediction_shift({"a": 1, "b": 1}, {"a": 1, "b": 1, "c": 2}) == pytest.approx(
        _js_distance([1, 1, 0], [1, 1, 2])
    )
    with pytest.raises(LifecycleError, match="both revisions"):
        prediction_shift({}, {"no": 1})


def test_judge_compares_label_shares_only_when_asked():
    canary = _stats("2", 0.0, {"yes": 90, "no": 10})
    stable = _stats("1", 0.0, {"yes": 20, "no": 80})
    assert judge(canary, stable, CanaryOptions()).decision == PROMOTE
    verdict = judge(canary, stable, CanaryOptions(max_prediction_shift=0.1))
    assert verdict.decision == ROLLBACK
    (reason,) = [r for r in verdict.reasons if r.startswith("FAIL")]
    distance = _js_distance([10, 90], [80, 20])
    assert reason == (
        f"FAIL: prediction shift {distance:.3f} (Jensen-Shannon distance, limit 0.100): "
        "canary no 10%, yes 90% vs stable no 80%, yes 20%"
    )
    assert judge(canary, stable, CanaryOptions(max_prediction_shift=0.9)).decision == PROMOTE
    silent = judge(canary, _stats("1", 0.0), CanaryOptions(max_prediction_shift=0.1))
    assert silent.decision == PROMOTE
    assert "not judged: prediction shift: the stable predicted nothing in 2m" in silent.reasons


def test_judge_rules():
    options = CanaryOptions(max_error_rate=0.01, max_error_rate_increase=0.005)
    assert judge(_stats("2", 0.004), _stats("1", 0.0), options).decision == PROMOTE
    assert judge(_stats("2", 0.006), _stats("1", 0.0), options).decision == ROLLBACK
    # a stable revision that already errors does not make every canary fail
    assert judge(_stats("2", 0.02), _stats("1", 0.02), options).decision == PROMOTE


def test_latency_fails_on_ratio_and_a_real_increase_only():
    """p99s of milliseconds differ severalfold by noise: 3.6x of 2.4 ms is no regression;
    3x of 100 ms is; and the slack is a setting."""
    options = CanaryOptions()

    def timed(version, p99):
        return RevisionStats(version, 100, 0.0, p99 / 2, p99, {})

    assert judge(timed("2", 0.0086), timed("1", 0.0024), options).decision == PROMOTE
    slow = judge(timed("2", 0.300), timed("1", 0.100), options)
    assert slow.decision == ROLLBACK and slow.reasons[0].startswith("FAIL: p99 latency 300.0 ms")
    strict = CanaryOptions(min_p99_latency_increase_seconds=0)
    assert judge(timed("2", 0.0086), timed("1", 0.0024), strict).decision == ROLLBACK
