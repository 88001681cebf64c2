import json
import shutil
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from bundles import build_bundle, churn_evaluation, gate_decision

from kfp_lifecycle.components.register import register_bundle
from kfp_lifecycle.core.bundle import METADATA_FILE, MODEL_FILE, load_bundle, sha256_file
from kfp_lifecycle.core.documents import Baseline
from kfp_lifecycle.core.errors import BundleError, RegistryError
from kfp_lifecycle.registry import (
    CHAMPION,
    PREVIOUS,
    LocalRegistry,
    describe_versions,
    model_name_from,
    promote,
    rollback,
    set_alias,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, churn):
    return build_bundle(tmp_path_factory.mktemp("bundle"), churn)


def test_bundle_holds_one_model_file_and_complete_metadata(bundle_dir):
    assert sorted(p.name for p in bundle_dir.iterdir()) == [METADATA_FILE, MODEL_FILE]
    metadata = json.loads((bundle_dir / METADATA_FILE).read_text())
    assert metadata["sha256"] == sha256_file(bundle_dir / MODEL_FILE)
    assert metadata["libraries"]["scikit-learn"] and metadata["libraries"]["xgboost-cpu"]
    columns = {c["name"]: c for c in metadata["input_schema"]["columns"]}
    assert columns["plan"]["categories"] == ["basic", "pro", "standard"]
    assert columns["age"]["kind"] == "numeric"
    assert metadata["classes"] == ["no", "yes"]


def test_tampered_model_file_is_refused(tmp_path, bundle_dir):
    for name in (MODEL_FILE, METADATA_FILE):
        (tmp_path / name).write_bytes((bundle_dir / name).read_bytes())
    with open(tmp_path / MODEL_FILE, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="does not match its recorded sha256"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="sha256"):
        LocalRegistry(tmp_path / "registry").register("churn", tmp_path, {})
    assert LocalRegistry(tmp_path / "registry").versions("churn") == []


def test_versions_are_numbered_and_immutable_copies(tmp_path, bundle_dir):
    registry = LocalRegistry(tmp_path)
    first = registry.register("churn", bundle_dir, {"note": "a"})
    second = registry.register("churn", bundle_dir, {"note": "b"})
    assert (first.version, second.version) == (1, 2)
    assert registry.versions("churn") == [1, 2]
    metadata = json.loads((tmp_path / "churn/versions/1" / METADATA_FILE).read_text())
    assert (metadata["note"], metadata["registry_version"]) == ("a", 1)
    load_bundle(first.uri)  # the copy verifies
    assert not [p for p in (tmp_path / "churn").iterdir() if p.name.startswith(".staging")]


def test_published_versions_are_readable_by_everyone(tmp_path, bundle_dir):
    """A model server often runs as another user than the pipeline step that registered."""
    version = LocalRegistry(tmp_path).register("churn", bundle_dir, {})
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in (Path(version.uri), *Path(version.uri).iterdir())
    }
    assert modes == {"1": 0o755, MODEL_FILE: 0o644, METADATA_FILE: 0o644}


@pytest.mark.timeout(60)  # the old code retried any failed rename forever
def test_a_version_that_cannot_be_published_fails_with_the_path(tmp_path, bundle_dir):
    """Only "this number is taken" is retried; any other failure is a clear error at once.

    versions/ is on another filesystem (a symlink into /dev/shm), so renaming the staging
    directory into it fails with EXDEV: a real refusal, whoever runs the tests (root would
    pass any permission check).
    """
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else None
    if elsewhere is None or elsewhere.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    try:
        (tmp_path / "churn").mkdir()
        (tmp_path / "churn" / "versions").symlink_to(elsewhere)
        registry = LocalRegistry(tmp_path)
        with pytest.raises(RegistryError) as refused:
            registry.register("churn", bundle_dir, {})
        assert str(refused.value).startswith(
            f"cannot register 'churn' in {tmp_path}: [Errno 18] Invalid cross-device link"
        )
        assert str(refused.value).endswith(f"-> '{tmp_path / 'churn' / 'versions' / '1'}'")
        assert registry.versions("churn") == []
        assert not list((tmp_path / "churn").glob(".staging-*"))  # nothing left half-written
    finally:
        shutil.rmtree(elsewhere)


def test_previous_is_recorded_in_the_champion_alias(tmp_path, bundle_dir):
    """One file, written atomically, holds the champion and its previous: they cannot disagree."""
    registry = LocalRegistry(tmp_path)
    for _ in range(3):
        registry.register("churn", bundle_dir, {})
    for version in (1, 2, 3):
        set_alias(registry, "churn", CHAMPION, version)
    aliases = tmp_path / "churn" / "aliases"
    assert sorted(p.name for p in aliases.iterdir()) == [f"{CHAMPION}.json"]
    record = json.loads((aliases / f"{CHAMPION}.json").read_text())
    assert (record["version"], record["previous"]) == (3, 2)
    (aliases / f"{PREVIOUS}.json").write_text(json.dumps({"version": 1}))  # as older code left
    assert registry.aliases("churn") == {CHAMPION: 3, PREVIOUS: 2}
    assert registry.alias("churn", PREVIOUS).version == 2
    assert rollback(registry, "churn") == 2
    with pytest.raises(RegistryError, match="'previous' is kept by the registry"):
        set_alias(registry, "churn", PREVIOUS, 1)
    assert registry.aliases("churn") == {CHAMPION: 2, PREVIOUS: 3}


def _register_once(args):
    root, bundle = args
    return LocalRegistry(root).register("churn", bundle, {}).version


def test_concurrent_registrations_get_distinct_complete_versions(tmp_path, bundle_dir):
    with ProcessPoolExecutor(max_workers=4) as pool:
        numbers = list(pool.map(_register_once, [(tmp_path, bundle_dir)] * 8))
    assert sorted(numbers) == list(range(1, 9))
    for number in numbers:
        load_bundle(tmp_path / "churn" / "versions" / str(number))


def test_champion_alias_moves_only_for_blessed_models(tmp_path, bundle_dir):
    evaluation = churn_evaluation()
    blessed = gate_decision(True, ["pass"])
    refused = gate_decision(False, ["FAIL"])
    lineage = {"run_id": "r"}
    first = register_bundle(str(bundle_dir), str(tmp_path), "churn", evaluation, blessed, lineage)
    second = register_bundle(str(bundle_dir), str(tmp_path), "churn", evaluation, refused, lineage)
    registry = LocalRegistry(tmp_path)
    assert (first["model_version"], second["model_version"]) == (1, 2)
    assert registry.aliases("churn") == {CHAMPION: 1}
    seen = Baseline(version=1, uri=str(tmp_path / "churn/versions/1"), metrics={"roc_auc": 0.7})
    compared = gate_decision(True, ["pass"], baseline=seen)  # the champion the gate saw
    third = register_bundle(str(bundle_dir), str(tmp_path), "churn", evaluation, compared, lineage)
    assert registry.aliases("churn") == {CHAMPION: 3, PREVIOUS: 1}
    assert third["champion_alias"] == 3
    metadata = json.loads((tmp_path / "churn/versions/2" / METADATA_FILE).read_text())
    assert metadata["gate"]["blessed"] is False and metadata["lineage"]["run_id"] == "r"


def test_alias_cannot_point_at_a_missing_version(tmp_path, bundle_dir):
    registry = LocalRegistry(tmp_path)
    registry.register("churn", bundle_dir, {})
    with pytest.raises(RegistryError, match="no version 5; versions: 1"):
        set_alias(registry, "churn", CHAMPION, 5)


def test_model_names_are_safe():
    assert model_name_from("Churn Flag (30d)") == "churn-flag-30d"
    with pytest.raises(RegistryError, match="invalid model name"):
        LocalRegistry("/tmp").versions("../etc")


def test_promote_needs_a_blessing_or_a_stated_override(tmp_path, bundle_dir):
    evaluation = churn_evaluation()
    for blessed in (True, False):
        register_bundle(
            str(bundle_dir), str(tmp_path), "churn", evaluation,
            gate_decision(blessed), {"run_id": "r"},
        )  # fmt: skip
    registry = LocalRegistry(tmp_path)
    with pytest.raises(RegistryError, match="not blessed by the gate"):
        promote(registry, "churn", 2)
    assert registry.aliases("churn") == {CHAMPION: 1}
    promote(registry, "churn", 2, override_reason="hotfix accepted by on-call")
    assert registry.aliases("churn") == {CHAMPION: 2, PREVIOUS: 1}
    champion_file = tmp_path / "churn" / "aliases" / f"{CHAMPION}.json"
    assert json.loads(champion_file.read_text())["override_reason"] == "hotfix accepted by on-call"
    assert rollback(registry, "churn") == 1
    assert registry.aliases("churn") == {CHAMPION: 1, PREVIOUS: 2}
    assert "override_reason" not in json.loads(champion_file.read_text())  # blessed again
    rows = describe_versions(registry, "churn")
    assert [(r["version"], r["blessed"], r["aliases"]) for r in rows] == [
        (1, True, [CHAMPION]),
        (2, False, [PREVIOUS]),
    ]
    assert rows[0]["test_score"] == 0.8


def test_registry_commands(tmp_path, bundle_dir):
    register_bundle(
        str(bundle_dir), str(tmp_path), "churn", churn_evaluation(),
        gate_decision(True), {"run_id": "r"},
    )  # fmt: skip
    run = [sys.executable, "-m", "kfp_lifecycle.cli", "registry"]
    where = ["--registry", str(tmp_path), "--model", "churn"]
    listed = subprocess.run([*run, "list", *where], capture_output=True, text=True, check=True)
    assert "champion" in listed.stdout and "roc_auc=0.8000" in listed.stdout
    shown = subprocess.run([*run, "show", *where], capture_output=True, text=True, check=True)
    lines = shown.stdout.splitlines()
    assert lines[0] == "churn version 1 (champion)" and len(lines) < 25
    assert "  test:         roc_auc=0.8" in lines and "  gate:         blessed" in lines
    assert "{" not in shown.stdout  # no JSON: the contract and reference are --json's
    full = [*run, "show", *where, "--json"]
    shown = subprocess.run(full, capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["registry_version"] == 1
    refused = subprocess.run([*run, "rollback", *where], capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: model 'churn' has no previous champion to roll back to"
    nothing = ["--registry", str(tmp_path), "--model", "nosuch"]
    missing = subprocess.run([*run, "list", *nothing], capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: model 'nosuch' has no version in {tmp_path}"


def test_register_assembles_the_bundle_once_from_the_model_and_its_documents(
    tmp_path, bundle_dir, churn
):
    """The registered bundle is the selected model's file, byte for byte, with the documents'
    keys in its metadata; the selected bundle itself is left as it was."""
    from kfp.dsl import Artifact, Dataset, Markdown, Model

    from kfp_lifecycle.components.register import register
    from kfp_lifecycle.components.validate import infer_contract
    from kfp_lifecycle.core.documents import (
        Calibration,
        Explanation,
        Leaderboard,
        PlattScaling,
        write_document,
    )

    before = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    scaling = PlattScaling(slopes=[0.9], intercepts=[0.1])
    documents = {
        "leaderboard": Leaderboard(primary_metric="roc_auc", scores={"linear": 0.8, "knn": 0.7}),
        "calibration": Calibration(scaling=scaling, decision_threshold=0.35),
        "explanation": Explanation(
            method="permutation importance",
            metric="roc_auc",
            permutation_importance={"tenure_months": 0.1},
            permutation_importance_std={"tenure_months": 0.01},
        ),
        "evaluation": churn_evaluation(0.81),
        "blessing": gate_decision(True, ["pass: roc_auc"]),
    }
    for name, document in documents.items():
        write_document(tmp_path / f"{name}.json", document)
    (tmp_path / "card.md").write_text("# Model card: churn\n")
    (tmp_path / "contract.json").write_text(json.dumps(infer_contract(churn, "churned")))
    churn.to_parquet(tmp_path / "train.parquet")
    bundle, summary = Model(uri=str(tmp_path / "bundle")), Artifact(uri=str(tmp_path / "s.json"))
    register.python_func(
        model=Model(uri=str(bundle_dir)),
        **{name: Artifact(uri=str(tmp_path / f"{name}.json")) for name in documents},
        model_card=Markdown(uri=str(tmp_path / "card.md")),
        contract=Artifact(uri=str(tmp_path / "contract.json")),
        reference=Dataset(uri=str(tmp_path / "train.parquet")),
        registry=str(tmp_path / "registry"),
        model_name="churn",
        data_source="churn.csv",
        data_sha256="0" * 64,
        run_id="run-1",
        bundle=bundle,
        summary=summary,
    )
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == before
    assembled = load_bundle(bundle.path)  # verifies the recorded sha256
    assert (Path(bundle.path) / MODEL_FILE).read_bytes() == before[MODEL_FILE]
    metadata = assembled.metadata
    assert metadata["leaderboard"] == {"linear": 0.8, "knn": 0.7}
    assert metadata["calibration"] == {"method": "sigmoid", "slopes": [0.9], "intercepts": [0.1]}
    assert metadata["decision_threshold"] == 0.35 and "threshold_selection" not in metadata
    assert metadata["explanation"]["permutation_importance"] == {"tenure_months": 0.1}
    assert metadata["model_card"] == "# Model card: churn\n"
    original = json.loads(before[METADATA_FILE])
    assert {k: v for k, v in metadata.items() if k in original and k != "leaderboard"} == {
        k: v for k, v in original.items() if k != "leaderboard"
    }
    registered = load_bundle(tmp_path / "registry" / "churn" / "versions" / "1")
    assert registered.metadata["decision_threshold"] == 0.35
    assert registered.metadata["metrics_test"] == {"roc_auc": 0.81}
    assert registered.metadata["gate"]["blessed"] is True
    written = json.loads(Path(summary.path).read_text())
    assert written["champion_alias"] == 1 and written["leaderboard"]["knn"] == 0.7
