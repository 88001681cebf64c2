"""The model server and `lifecycle serve` start and predict with kfp unimportable: a
served model needs only kfp_lifecycle.core, the registry and storage."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from server_process import Server, free_port, wait_until_ready

from kfp_lifecycle.core.bundle import load_bundle, write_bundle

TESTS = Path(__file__).resolve().parent
WITHOUT_KFP = [sys.executable, str(TESTS / "without_kfp.py")]
FIXTURE = TESTS / "fixtures" / "bundles-0.1.0" / "binary_linear"


def test_the_hook_really_blocks_kfp():
    result = subprocess.run(
        [*WITHOUT_KFP, "-c", "import kfp.dsl"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "ImportError: kfp is not importable here" in result.stderr


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The 0.1.0 bundle (format 1, its classes remapped) and the same model as format 2."""
    root = tmp_path_factory.mktemp("bundles")
    old = root / "churn-old"
    shutil.copytree(FIXTURE / "bundle", old)
    bundle = load_bundle(old)
    write_bundle(root / "churn-new", bundle.pipeline, bundle.metadata)
    return {"format 1": old, "format 2": root / "churn-new"}


LAUNCHERS = {
    "model server": ["-m", "kfp_lifecycle.serving.server"],
    "lifecycle serve": ["-c", "import sys; from kfp_lifecycle.cli import main; "
                              "sys.exit(main(sys.argv[1:]))", "serve"],
}  # fmt: skip


@pytest.mark.serving
# Each launcher once, each format once: a server start costs seconds.
@pytest.mark.parametrize(
    ("launcher", "bundle"), [("model server", "format 1"), ("lifecycle serve", "format 2")]
)
def test_a_server_without_kfp_answers_predictions(launcher, bundle, bundles, tmp_path):
    model_dir = bundles[bundle]
    port = free_port()
    server = Server(port, "toy", tmp_path / "server.log")
    command = [*WITHOUT_KFP, *LAUNCHERS[launcher], "--model", str(model_dir)]
    command += ["--port", str(port), "--name", "toy"]
    with open(server.log, "wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        wait_until_ready(process, server)
        rows = pd.read_parquet(FIXTURE / "rows.parquet").head(5)
        instances = json.loads(rows.to_json(orient="records"))
        response = httpx.post(
            f"{server.url}/v1/models/toy:predict", json={"instances": instances}, timeout=10
        )
        assert response.status_code == 200, response.text
        expected = json.loads((FIXTURE / "expected.json").read_text())["labels"][:5]
        assert response.json()["predictions"] == expected
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "kfp is not importable" not in server.log.read_text()
