"""Authentic models: a version swapped in the registry (model and its sha256 together) is
refused before anything unpickles it, on S3 and locally; so is changed metadata, and an
unsigned version unless explicitly allowed."""

import json
import os
import pickle
from pathlib import Path

import joblib
import pytest
from s3_server import new_bucket

from kfp_lifecycle.core.bundle import METADATA_FILE, MODEL_FILE
from kfp_lifecycle.core.errors import BundleError, RegistryError
from kfp_lifecycle.registry import (
    CHAMPION,
    LocalRegistry,
    S3Registry,
    download_version,
    load_version,
    promote,
    set_alias,
    signing,
)
from kfp_lifecycle.serving.server import resolve_model
from kfp_lifecycle.storage import parse_s3_uri, put_bytes, read_bytes


class Planted:
    """A pickle that creates a file when unpickled: what an attacker would run instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _swapped(metadata_bytes: bytes, evil: bytes) -> bytes:
    """metadata.json with the sha256 of the planted pickle, signature left as it was."""
    import hashlib

    metadata = json.loads(metadata_bytes)
    return json.dumps({**metadata, "sha256": hashlib.sha256(evil).hexdigest()}).encode()


def test_the_planted_pickle_would_run_if_loaded(tmp_path):
    """Control: the attack is real, so its absence below means it was not unpickled."""
    marker = tmp_path / "ran"
    joblib.load(_dump(Planted(marker), tmp_path / "evil.joblib"))
    assert marker.exists()


def _dump(value, path: Path) -> Path:
    path.write_bytes(pickle.dumps(value))
    return path


def test_a_pickle_swapped_in_the_bucket_is_refused_unexecuted(
    moto, bundle_dir, tmp_path, monkeypatch
):
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    client = moto.client()
    root = f"s3://{new_bucket(client)}/registry"
    registry = S3Registry(root, client)
    version = registry.register("churn", bundle_dir, {"gate": {"blessed": True}})
    set_alias(registry, "churn", CHAMPION, version.version)
    assert load_version(version.uri, client=client).metadata["registry_version"] == 1

    marker = tmp_path / "attacker-was-here"
    evil = pickle.dumps(Planted(marker))
    bucket, prefix = parse_s3_uri(version.uri)
    model_key, metadata_key = prefix + MODEL_FILE, prefix + METADATA_FILE
    original = read_bytes(client, bucket, metadata_key)[0]
    put_bytes(client, bucket, model_key, evil, content_type="application/octet-stream")
    put_bytes(client, bucket, metadata_key, _swapped(original, evil))

    with pytest.raises(BundleError, match="bad signature"):
        load_version(version.uri, client=client)
    with pytest.raises(BundleError, match="bad signature"):
        download_version(version.uri, tmp_path / "download", client)
    with pytest.raises(BundleError, match="bad signature"):  # what `lifecycle serve` does
        resolve_model(f"{root}/churn@champion")
    with pytest.raises(BundleError, match="bad signature"):
        promote(registry, "churn", version.version)
    assert not marker.exists()
    assert not (tmp_path / "download" / MODEL_FILE).exists()

    # The signature dropped as well: refused as unsigned (accepted only when allowed).
    unsigned = {k: v for k, v in json.loads(_swapped(original, evil)).items() if k != "signature"}
    put_bytes(client, bucket, metadata_key, json.dumps(unsigned).encode())
    with pytest.raises(BundleError, match="is not signed"):
        load_version(version.uri, client=client)
    assert not marker.exists()


def test_changed_metadata_is_refused(moto, bundle_dir, tmp_path):
    """The threshold, schema and gate decision are signed too, not only the model file."""
    client = moto.client()
    registry = S3Registry(f"s3://{new_bucket(client)}/registry", client)
    version = registry.register("churn", bundle_dir, {"gate": {"blessed": False}})
    bucket, prefix = parse_s3_uri(version.uri)
    metadata = json.loads(read_bytes(client, bucket, prefix + METADATA_FILE)[0])
    metadata["gate"]["blessed"] = True
    put_bytes(client, bucket, prefix + METADATA_FILE, json.dumps(metadata).encode())
    with pytest.raises(BundleError, match="bad signature"):
        load_version(version.uri, client=client)


def test_local_swap_is_refused_and_the_demo_key_lives_beside_the_registry(
    bundle_dir, tmp_path, monkeypatch
):
    monkeypatch.delenv(signing.KEY_ENV)
    root = tmp_path / "registry"
    registry = LocalRegistry(root)
    version = registry.register("churn", bundle_dir, {})
    key_file = tmp_path / "registry.signing-key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    assert not any(p.name.endswith("signing-key") for p in root.rglob("*"))
    assert load_version(version.uri).metadata["signature"]["algorithm"] == "hmac-sha256"

    marker = tmp_path / "attacker-was-here"
    evil = pickle.dumps(Planted(marker))
    directory = Path(version.uri)
    original = (directory / METADATA_FILE).read_bytes()
    (directory / MODEL_FILE).write_bytes(evil)
    (directory / METADATA_FILE).write_bytes(_swapped(original, evil))
    with pytest.raises(BundleError, match="bad signature"):
        load_version(version.uri)
    assert not marker.exists()


def test_unsigned_versions_load_only_when_allowed(bundle_dir, tmp_path, monkeypatch):
    root = tmp_path / "registry"
    version = LocalRegistry(root).register("churn", bundle_dir, {})
    path = Path(version.uri) / METADATA_FILE
    metadata = json.loads(path.read_text())
    del metadata["signature"]
    path.write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=r"is not signed.*LIFECYCLE_ALLOW_UNSIGNED=1"):
        load_version(version.uri)
    monkeypatch.setenv(signing.ALLOW_UNSIGNED_ENV, "1")
    assert load_version(version.uri).metadata["registry_version"] == 1


def test_another_key_is_refused_and_s3_needs_a_key(moto, bundle_dir, tmp_path, monkeypatch):
    root = tmp_path / "registry"
    version = LocalRegistry(root).register("churn", bundle_dir, {})
    monkeypatch.setenv(signing.KEY_ENV, "some-other-key")
    with pytest.raises(BundleError, match="signed with another key"):
        load_version(version.uri)
    monkeypatch.delenv(signing.KEY_ENV)
    client = moto.client()
    with pytest.raises(RegistryError, match="no signing key: set LIFECYCLE_SIGNING_KEY"):
        S3Registry(f"s3://{new_bucket(client)}/r", client).register("churn", bundle_dir, {})
    key_file = tmp_path / "key"
    key_file.write_text("test-signing-key-not-a-secret\n")
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(key_file))
    assert load_version(version.uri).metadata["registry_version"] == 1
    assert os.environ.get(signing.KEY_ENV) is None


def test_the_model_server_verifies_what_it_loads(bundle_dir, tmp_path, monkeypatch):
    """KServe's /mnt/models is a copy of a registered version: a signed copy is verified (a
    swapped pickle never runs); with --require-signature (the ServingRuntime's) an unsigned
    bundle is refused; without it an unsigned bundle (a training run's output) loads."""
    import shutil

    from kfp_lifecycle.registry import load_served

    version = LocalRegistry(tmp_path / "registry").register("churn", bundle_dir, {})
    mounted = tmp_path / "mnt-models"
    shutil.copytree(version.uri, mounted)
    assert load_served(mounted, require_signature=True).metadata["registry_version"] == 1

    marker = tmp_path / "attacker-was-here"
    evil = pickle.dumps(Planted(marker))
    swapped = tmp_path / "swapped"
    shutil.copytree(version.uri, swapped)
    (swapped / MODEL_FILE).write_bytes(evil)
    (swapped / METADATA_FILE).write_bytes(_swapped((mounted / METADATA_FILE).read_bytes(), evil))
    for required in (True, False):  # a signature present is always checked
        with pytest.raises(BundleError, match="bad signature"):
            load_served(swapped, require_signature=required)
    assert not marker.exists()

    with pytest.raises(BundleError, match=r"is not signed.*LIFECYCLE_ALLOW_UNSIGNED=1"):
        load_served(bundle_dir, require_signature=True)
    assert load_served(bundle_dir).metadata["sha256"]
    monkeypatch.setenv(signing.ALLOW_UNSIGNED_ENV, "1")
    assert load_served(bundle_dir, require_signature=True).metadata["sha256"]


def test_the_serving_runtime_requires_signatures():
    import yaml

    runtime = Path(__file__).parents[1] / "manifests/base/serving/servingruntime.yaml"
    (container,) = yaml.safe_load(runtime.read_text())["spec"]["containers"]
    assert "--require-signature" in container["args"]
    secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    assert signing.KEY_ENV and "kfp-lifecycle-signing" in secrets
