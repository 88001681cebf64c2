"""The model server at its edges, through KServe's real server on loopback: new categories
served with warnings (strict refuses them), the request log feeding drift, closed routes, cut
error values, every refusal counted, slow clients cut off, a soak with bad requests mixed in.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from bundles import build_bundle
from prometheus_client.parser import text_string_to_metric_families
from server_process import Server

from kfp_lifecycle.components.drift import reference_sample
from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.core.bundle import load_bundle, read_metadata, write_metadata
from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.serving.model import INPUT_DATATYPE, UNSEEN_WARNING

pytestmark = pytest.mark.serving
NAME = "churn"
READ_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, churn: pd.DataFrame) -> Path:
    """A churn bundle keeping a reference sample, as the register step keeps one."""
    directory = build_bundle(tmp_path_factory.mktemp("edges") / "bundle", churn)
    training = split_table(churn, "churned", CLASSIFICATION, seed=0).train
    metadata = read_metadata(directory)
    metadata["reference"] = reference_sample(training, "churned")
    write_metadata(directory, metadata)
    return directory


@pytest.fixture(scope="module")
def rows(churn: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(churn.drop(columns=["churned"]).head(40).to_json(orient="records"))


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("request-log")


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server], bundle_dir: Path, log_dir: Path) -> Server:
    env = {"LIFECYCLE_PAYLOAD_LOG_URI": str(log_dir), "LIFECYCLE_PAYLOAD_LOG_FLUSH_SECONDS": "60"}
    return start_server(
        bundle_dir, NAME, ("--name", NAME, "--read-timeout", str(READ_TIMEOUT)), env
    )


def _predict(server: Server, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{NAME}:predict", json=body, timeout=30, **kwargs)


def _metrics(server: Server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _sum(metrics: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (metric, got), value in metrics.items()
        if metric == name and all(dict(got).get(k) == v for k, v in labels.items())
    )


def test_a_new_category_is_served_with_a_warning_and_counted(server, rows, bundle_dir):
    before = _sum(_metrics(server), "kfp_lifecycle_unseen_categories_total", column="plan")
    sent = [rows[0], {**rows[1], "plan": "platinum"}]
    response = _predict(server, {"instances": sent})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["warnings"] == [
        {
            "row": 1,
            "field": "plan",
            "value": "platinum",
            "warning": UNSEEN_WARNING,
        }
    ]
    bundle = load_bundle(bundle_dir)  # the reference: the sklearn pipeline on the same row
    expected = bundle.predict(pd.DataFrame(bundle.schema.coerce(pd.DataFrame(sent))))
    assert body["predictions"] == expected.labels
    after = _sum(_metrics(server), "kfp_lifecycle_unseen_categories_total", column="plan")
    assert after == before + 1

    inputs = [
        {"name": c.name, "shape": [1], "datatype": INPUT_DATATYPE[c.kind],
         "data": [sent[1][c.name]]}
        for c in bundle.schema.columns
    ]  # fmt: skip
    v2 = httpx.post(f"{server.url}/v2/models/{NAME}/infer", json={"inputs": inputs}, timeout=30)
    assert v2.status_code == 200, v2.text
    assert json.loads(v2.json()["parameters"]["warnings"])[0]["value"] == "platinum"


def test_strict_mode_keeps_the_400(start_server, bundle_dir, rows):
    strict = start_server(bundle_dir, NAME, ("--name", NAME, "--strict"))
    response = _predict(strict, {"instances": [rows[0], {**rows[1], "plan": "platinum"}]})
    assert response.status_code == 400
    assert "record 1, field 'plan': category 'platinum' was never seen" in response.text
    assert _predict(strict, {"instances": rows[:2]}).status_code == 200


def test_the_model_repository_routes_are_closed(server, rows):
    for action in ("unload", "load"):
        response = httpx.post(f"{server.url}/v2/repository/models/{NAME}/{action}", timeout=10)
        assert response.status_code == 404
    assert _predict(server, {"instances": rows[:1]}).status_code == 200


def test_json_with_a_charset_is_json(server, rows):
    response = _predict(
        server,
        None,
        content=json.dumps({"instances": rows[:1]}).encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text


def test_a_huge_bad_value_is_cut_in_the_answer_and_the_log_without_a_traceback(server, rows):
    huge = "x" * 2_000_000
    response = _predict(server, {"instances": [{**rows[0], "age": huge}]})
    assert response.status_code == 400
    assert len(response.content) < 1000
    assert "(2000002 characters)" in response.json()["error"]
    assert "record 0, field 'age': expected a number, got str" in response.json()["error"]
    time.sleep(0.5)
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "x" * 200 not in log


def test_every_refusal_is_counted_by_reason_and_equals_the_4xx_answers(server, rows):
    before = _metrics(server)
    url = server.url
    answers = [
        httpx.post(f"{url}/v1/models/{NAME}:predict", content=b"{not json", timeout=10),
        httpx.post(f"{url}/v1/models/nobody:predict", json={"instances": rows[:1]}, timeout=10),
        httpx.post(f"{url}/v2/models/{NAME}/infer", json={"no": "inputs"}, timeout=10),
        httpx.post(
            f"{url}/v1/models/{NAME}:predict", content=b"x" * (11 * 1024 * 1024), timeout=30
        ),
        _predict(server, {"instances": [{"age": 3}]}),
        httpx.get(f"{url}/no/such/path", timeout=10),
        _predict(server, {"instances": rows[:2]}),
    ]
    statuses = [a.status_code for a in answers]
    assert statuses == [400, 404, 422, 413, 400, 404, 200]
    after = _metrics(server)

    def grew(name: str, **labels: str) -> float:
        return _sum(after, name, **labels) - _sum(before, name, **labels)

    reasons = {
        reason: grew("kfp_lifecycle_rejected_requests_total", reason=reason)
        for reason in ("malformed_body", "not_found", "invalid_body", "too_large", "schema")
    }
    assert reasons == {
        "malformed_body": 1, "not_found": 2, "invalid_body": 1, "too_large": 1, "schema": 1,
    }  # fmt: skip
    assert grew("kfp_lifecycle_requests_total", outcome="rejected") == 6
    assert grew("kfp_lifecycle_requests_total", outcome="ok") == 1


def test_a_slow_client_is_cut_off_at_the_read_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"POST /v1/models/churn:predict HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for _ in range(20):  # one header byte a while: each alone is not a whole request
            time.sleep(0.25)
            try:
                slow.sendall(b"X")
            except OSError:
                break
        slow.settimeout(10)
        try:
            closed = slow.recv(1024) == b""
        except ConnectionResetError:
            closed = True
        assert closed
        assert time.monotonic() - started < READ_TIMEOUT + 5
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        silent.settimeout(READ_TIMEOUT + 5)
        assert silent.recv(1024) == b""  # connected, never sent a byte: closed too


def test_the_server_binds_loopback_unless_told(server):
    listening = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[3] == "0A"  # LISTEN
    ]
    assert f"0100007F:{server.port:04X}" in listening  # 127.0.0.1
    assert f"00000000:{server.port:04X}" not in listening  # not 0.0.0.0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_soak_mixed_good_and_bad_requests(server, rows):
    """At most ~30 s on loopback: 0 5xx, the rejected counter equals the 4xx answers, and
    memory stays flat (bounded growth after a warm-up)."""
    bodies: list[tuple[str, bytes]] = [
        ("good", json.dumps({"instances": rows[:1]}).encode()),
        ("batch", json.dumps({"instances": rows}).encode()),
        ("unseen", json.dumps({"instances": [{**rows[0], "plan": "gold"}]}).encode()),
        ("schema", json.dumps({"instances": [{**rows[0], "age": "old"}]}).encode()),
        ("missing", json.dumps({"instances": [{"age": 1}]}).encode()),
        ("garbage", b"\x00\x01not json"),
        ("big-value", json.dumps({"instances": [{**rows[0], "region": "r" * 200_000}]}).encode()),
    ]
    url = f"{server.url}/v1/models/{NAME}:predict"
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def client(seconds: float, seed: int) -> None:
        deadline = time.monotonic() + seconds
        with httpx.Client(timeout=30) as http:
            n = seed
            while time.monotonic() < deadline:
                _, body = bodies[n % len(bodies)]
                status = http.post(url, content=body).status_code
                with lock:
                    statuses[status] += 1
                n += 1

    def run(seconds: float) -> None:
        threads = [threading.Thread(target=client, args=(seconds, i)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    run(5)  # warm-up: allocator and caches settle
    before_metrics = _metrics(server)
    rss_before = _rss_kib(server.process.pid)
    statuses.clear()
    run(20)
    rss_after = _rss_kib(server.process.pid)
    after_metrics = _metrics(server)

    assert sum(statuses.values()) > 100, statuses
    assert not [s for s in statuses if s >= 500], statuses
    client_errors = sum(n for s, n in statuses.items() if 400 <= s < 500)
    assert client_errors > 0
    rejected = _sum(after_metrics, "kfp_lifecycle_requests_total", outcome="rejected") - _sum(
        before_metrics, "kfp_lifecycle_requests_total", outcome="rejected"
    )
    assert rejected == client_errors
    assert rss_after - rss_before < 40 * 1024, (rss_before, rss_after)  # KiB


def test_the_request_log_keeps_the_new_category_and_drift_reports_it(
    server, rows, bundle_dir, log_dir, tmp_path
):
    """Last in this module: it stops the server, whose graceful stop writes the log."""
    sent = [{**row, "plan": "platinum"} if i % 2 else row for i, row in enumerate(rows)]
    assert _predict(server, {"instances": sent}).status_code == 200
    server.process.terminate()
    server.process.wait(timeout=60)
    logged = pd.concat(pd.read_parquet(p) for p in sorted(log_dir.rglob("*.parquet")))
    assert (logged["plan"] == "platinum").sum() >= 20  # the raw value, as sent

    result = subprocess.run(
        [sys.executable, "-m", "kfp_lifecycle.cli", "drift", "--model", str(bundle_dir),
         "--current", str(log_dir / NAME), "--output", str(tmp_path / "drift")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "categories never seen in the reference" in result.stdout
    assert "platinum" in result.stdout
