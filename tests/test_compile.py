"""The compiled YAML is what a cluster runs: fresh, the project image only, no secret in it."""

from pathlib import Path

import yaml

from kfp_lifecycle.cluster import (
    DB_SECRET,
    DB_SECRET_KEYS,
    S3_CONFIG_MAP,
    S3_SECRET,
    S3_SECRET_KEYS,
    SIGNING_KEYS,
    SIGNING_SECRET,
)
from kfp_lifecycle.components import __file__ as components_init
from kfp_lifecycle.image import IMAGE
from kfp_lifecycle.pipelines import COMPILED_DIR, compile_all, pipelines


def _documents(name: str) -> tuple[dict, dict]:
    """The pipeline spec, and the Kubernetes platform spec (empty when there is none)."""
    documents = list(yaml.safe_load_all((COMPILED_DIR / f"{name}.yaml").read_text()))
    return documents[0], (documents[1] if len(documents) > 1 else {})


def test_compiled_pipelines_are_fresh(tmp_path):
    for path in compile_all(tmp_path):
        committed = COMPILED_DIR / path.name
        assert committed.exists(), f"{committed} is missing: run `make compile`"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `make compile`"
        )


def test_every_step_runs_in_the_project_image_without_installing_anything():
    for name in pipelines():
        executors = _documents(name)[0]["deploymentSpec"]["executors"]
        assert executors
        for executor in executors.values():
            container = executor["container"]
            assert container["image"] == IMAGE
            command = " ".join(container["command"] + container.get("args", []))
            assert "pip install" not in command and "pip3 install" not in command


def test_side_effect_steps_are_never_cached():
    """Nor steps whose input is a name for data that can change under it (ingest reads a URI;
    validate and gate read the registry's current champion)."""
    training = _documents("training")[0]
    tasks = training["root"]["dag"]["tasks"]
    for step in ("ingest", "validate", "gate", "register"):
        assert tasks[step]["cachingOptions"] == {}, step
    monitoring = _documents("monitoring")[0]
    tasks = monitoring["root"]["dag"]["tasks"]
    assert tasks["retrain"]["cachingOptions"] == {}  # it pushes gauges to the Pushgateway
    assert tasks["monitor"]["cachingOptions"] == {}
    nested = monitoring["components"]["comp-training"]["dag"]["tasks"]
    assert nested["ingest"]["cachingOptions"] == {} and nested["register"]["cachingOptions"] == {}
    deployment = _documents("deployment")[0]
    tasks = deployment["root"]["dag"]["tasks"]
    assert tasks["deploy"]["cachingOptions"] == {} and tasks["wait-ready"]["cachingOptions"] == {}
    (branch,) = [c for n, c in deployment["components"].items() if n.startswith("comp-condition")]
    assert branch["dag"]["tasks"]["rollout"]["cachingOptions"] == {}


def test_s3_credentials_come_from_a_secret_by_name_only(tmp_path, monkeypatch):
    planted = {
        "AWS_ACCESS_KEY_ID": "key-id-never-in-yaml-8e1d",
        "AWS_SECRET_ACCESS_KEY": "never-in-yaml-3f9c",
        "AWS_SESSION_TOKEN": "token-never-in-yaml-5a7b",
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    for path in compile_all(tmp_path):
        text = path.read_text()
        assert not [value for value in planted.values() if value in text], path.name
    training_steps = {"exec-ingest", "exec-validate", "exec-gate", "exec-register"}
    s3_steps = {
        "training": training_steps,
        "deployment": {"exec-deploy"},  # it reads the blessing from the registry
        "monitoring": training_steps | {"exec-monitor", "exec-deploy"},
        "scoring": {"exec-score"},  # it reads the model, the data and writes to S3
    }
    for name, expected in s3_steps.items():
        platform = _documents(name)[1]
        executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
        executors = executors.get("executors", {})
        with_secret = {step for step, spec in executors.items() if "secretAsEnv" in spec}
        assert with_secret >= expected, name
        for step in with_secret:
            secret, signing = [
                s for s in executors[step]["secretAsEnv"] if s["secretName"] != DB_SECRET
            ]
            assert secret["secretName"] == S3_SECRET and secret["optional"] is False
            assert {m["secretKey"] for m in secret["keyToEnv"]} == set(S3_SECRET_KEYS)
            assert signing["secretName"] == SIGNING_SECRET  # signs and verifies versions
            assert {m["secretKey"] for m in signing["keyToEnv"]} == set(SIGNING_KEYS)
            assert executors[step]["configMapAsEnv"][0]["configMapName"] == S3_CONFIG_MAP


def test_monitoring_retrains_and_deploys_only_under_their_conditions():
    tasks = _documents("monitoring")[0]["root"]["dag"]["tasks"]
    (retrain,) = [task for task in tasks.values() if "triggerPolicy" in task]
    assert retrain["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--retrain-Output'] == true"
    )
    branch = _documents("monitoring")[0]["components"][retrain["componentRef"]["name"]]
    inside = branch["dag"]["tasks"]
    assert inside["training"]["componentRef"]["name"] == "comp-training"  # the whole pipeline
    (deploy,) = [task for task in inside.values() if "triggerPolicy" in task]
    assert "pipelinechannel--deploy" in deploy["triggerPolicy"]["condition"]


def _artifact_edges(name: str) -> dict[tuple[str, str], set[str]]:
    """(producer task, output) -> the tasks that read it, ParallelFor bodies included (a loop
    input is followed to the task inside that reads it)."""
    spec = _documents(name)[0]
    edges: dict[tuple[str, str], set[str]] = {}
    loop_inputs: dict[str, tuple[str, str]] = {}
    for task, body in spec["root"]["dag"]["tasks"].items():
        for key, source in body.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in source:
                continue
            produced = source["taskOutputArtifact"]
            origin = (produced["producerTask"], produced["outputArtifactKey"])
            if "dag" in spec["components"][body["componentRef"]["name"]]:
                loop_inputs[key] = origin
            else:
                edges.setdefault(origin, set()).add(task)
    for component in spec["components"].values():
        for task, body in component.get("dag", {}).get("tasks", {}).items():
            for source in body.get("inputs", {}).get("artifacts", {}).values():
                if source.get("componentInputArtifact") in loop_inputs:
                    edges.setdefault(loop_inputs[source["componentInputArtifact"]], set()).add(task)
    return edges


def test_monitoring_drift_ranks_features_by_the_champions_importance():
    """The drift step's top_features rule gets the champion's permutation importance."""
    edges = _artifact_edges("monitoring")
    assert edges[("monitor", "importance")] == {"drift"}
    assert edges[("monitor", "contract")] == {"drift"}


def test_the_wiring_keeps_held_out_rows_out_of_every_fitted_step():
    """No leak by construction: what fits (preprocess, features, balance, train) reads
    only training rows; resampled rows reach training alone; test rows reach only the steps
    that score the finished model."""
    edges = _artifact_edges("training")
    assert edges[("split", "train")] == {"preprocess", "register"}  # register: drift reference
    assert edges[("preprocess", "train_clean")] == {"features", "balance", "train",
                                                    "diagnose"}  # fmt: skip
    assert edges[("balance", "balanced")] == {"train"}
    assert edges[("split", "validation")] == {"train", "calibrate", "diagnose"}
    assert edges[("split", "test")] == {  # export: checks the finished model's export
        "evaluate", "gate", "explain", "report", "export",
    }  # fmt: skip


def test_database_credentials_come_from_a_secret_by_name_only(tmp_path, monkeypatch):
    """Only ingest reads a database; the Secret is optional (file sources need none)."""
    planted = {"LIFECYCLE_DB_USER": "db-user-never-in-yaml-31c", "LIFECYCLE_DB_PASSWORD": "pw-9f2e"}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    (tmp_path / ".env").write_text("LIFECYCLE_DB_PASSWORD=pw-from-env-file-77a1\n")
    monkeypatch.chdir(tmp_path)
    for path in compile_all(tmp_path):
        text = path.read_text()
        assert "pw-from-env-file-77a1" not in text, path.name
        assert not [value for value in planted.values() if value in text], path.name
    for name in ("training", "monitoring"):
        executors = _documents(name)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        mounted = {
            step: secret
            for step, spec in executors.items()
            for secret in spec.get("secretAsEnv", [])
            if secret["secretName"] == DB_SECRET
        }
        assert set(mounted) == {"exec-ingest"}, name
        secret = mounted["exec-ingest"]
        assert secret["optional"] is True
        assert [(m["secretKey"], m["envVar"]) for m in secret["keyToEnv"]] == [
            (key, key) for key in DB_SECRET_KEYS
        ]


def _executor_images(path) -> set[str]:
    spec = next(yaml.safe_load_all(path.read_text()))
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


def test_the_image_is_a_setting_not_a_source_edit(tmp_path, monkeypatch, capsys):
    """`compile --image` and LIFECYCLE_IMAGE name every executor's image; the default stays."""
    from kfp_lifecycle import cli
    from kfp_lifecycle.image import IMAGE_ENV

    monkeypatch.delenv(IMAGE_ENV, raising=False)
    ours = "us-docker.pkg.dev/acme/ml/kfp-lifecycle:2026.12.1"
    assert cli.main(["compile", "--output-dir", str(tmp_path / "flag"), "--image", ours]) == 0
    written = sorted((tmp_path / "flag").glob("*.yaml"))
    assert sorted(p.stem for p in written) == sorted(pipelines())
    for path in written:
        assert _executor_images(path) == {ours}, path.name

    monkeypatch.setenv(IMAGE_ENV, "registry.example.com:5000/team/kfp@sha256:" + "ab" * 32)
    for path in compile_all(tmp_path / "env"):
        assert _executor_images(path) == {"registry.example.com:5000/team/kfp@sha256:" + "ab" * 32}
    monkeypatch.delenv(IMAGE_ENV)
    for path in compile_all(tmp_path / "default"):
        assert _executor_images(path) == {IMAGE}

    capsys.readouterr()
    for bad in ("kfp-lifecycle", "ghcr.io/acme/kfp-lifecycle:latest", "Ghcr.io/A/B:1"):
        assert cli.main(["compile", "--output-dir", str(tmp_path / "bad"), "--image", bad]) == 2
        assert f"--image '{bad}' is not an image reference" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_model_is_immutable_from_select_to_register():
    """select passes the model on; the steps after it write documents, never a Model; every
    step that judges the model reads it with its calibration; register alone assembles the
    bundle, from the model and the documents, and the ONNX export reads what it registered."""
    spec = _documents("training")[0]
    edges = _artifact_edges("training")
    writes_model = {
        name.removeprefix("comp-")
        for name, component in spec["components"].items()
        for output in component.get("outputDefinitions", {}).get("artifacts", {}).values()
        if output["artifactType"]["schemaTitle"] == "system.Model"
    }
    # the candidates, the choice, the assembled bundle and its ONNX form: nothing between
    assert writes_model == {"train", "for-loop-1", "select", "register", "export"}
    judges = {"evaluate", "gate", "diagnose", "explain", "report"}
    assert edges[("select", "selected")] == judges | {"calibrate", "register"}
    assert edges[("calibrate", "calibration")] == judges | {"register"}
    assert edges[("select", "leaderboard")] == {"report", "register"}
    for document in (
        ("explain", "explanation"),
        ("report", "model_card"),
        ("evaluate", "evaluation"),
        ("gate", "blessing"),
    ):
        assert "register" in edges[document], document
    assert edges[("register", "bundle")] == {"export"}
    register_inputs = spec["root"]["dag"]["tasks"]["register"]["inputs"]["artifacts"]
    assert {source["taskOutputArtifact"]["producerTask"] for source in register_inputs.values()} \
        == {"select", "calibrate", "explain", "report", "evaluate", "gate", "validate",
            "split"}  # fmt: skip


COMPONENTS_DIR = Path(components_init).parent
COMPONENT_MODULES = {path.stem for path in COMPONENTS_DIR.glob("*.py")} - {"__init__"}
# Steps that are not named after a module of their own, with where they live and why.
SECOND_STEPS = {
    "create-dask-cluster": "dask_cluster: the run's Dask cluster, made before the steps",
    "delete-dask-cluster": "dask_cluster: ... and deleted in the exit handler",
    "wait-ready": "deploy: waits until the deployed revision is ready",
}
# `<name>_options` parameters whose name is not a step's, and why.
OTHER_OPTIONS = {
    "sql": "ingest's SQL source (config data.sql, kfp_lifecycle/sources/sql.py)",
    "dask": "the Dask engine's cluster settings (config dask, kfp_lifecycle/dask_engine)",
}
OLD_NAMES = [  # renamed for issue 12.7: none may come back into a compiled pipeline
    "calibrate-threshold", "threshold_options", "select-features", "export-onnx",
    "tuning_options", "collect-window", "canary_options", "exec-decide",
]  # fmt: skip


def test_every_step_is_named_after_its_module_and_its_options_after_the_step():
    """One name per step (issue 12.7): the task, the module, `<step>_options`."""
    for name in pipelines():
        spec = _documents(name)[0]
        tasks = {executor.removeprefix("exec-") for executor in spec["deploymentSpec"]["executors"]}
        unnamed = {
            t for t in tasks - set(SECOND_STEPS) if t.replace("-", "_") not in COMPONENT_MODULES
        }
        assert not unnamed, f"{name}: steps named unlike their module: {sorted(unnamed)}"
        parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        steps = {p.removesuffix("_options") for p in parameters if p.endswith("_options")}
        assert steps - set(OTHER_OPTIONS) <= COMPONENT_MODULES, (name, sorted(steps))
        text = (COMPILED_DIR / f"{name}.yaml").read_text()
        assert [old for old in OLD_NAMES if old in text] == [], name


def test_select_hands_on_the_selected_model_and_champion_is_only_the_alias():
    spec = _documents("training")[0]
    outputs = spec["components"]["comp-select"]["outputDefinitions"]["artifacts"]
    assert set(outputs) == {"selected", "leaderboard"}
    register = spec["components"]["comp-register"]["inputDefinitions"]["artifacts"]
    assert "model" in register and "champion" not in register
