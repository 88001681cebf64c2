"""Registry operations under bad conditions, on both registries where it applies: names fully
matched, broken versions skipped and repaired, override reasons kept across rollbacks,
one-line errors on a full or read-only disk, and the writability check before training."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from s3_server import new_bucket

from kfp_lifecycle.cli import main
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.bundle import MODEL_FILE
from kfp_lifecycle.core.errors import LifecycleError, RegistryError
from kfp_lifecycle.local_run import pipeline_arguments
from kfp_lifecycle.registry import (
    CHAMPION,
    PREVIOUS,
    LocalRegistry,
    S3Registry,
    check_name,
    describe_versions,
    promote,
    rollback,
)
from kfp_lifecycle.storage import S3Config, put_bytes, s3_client


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path, moto):
    if request.param == "local":
        return LocalRegistry(tmp_path / "registry")
    client = moto.client()
    return S3Registry(f"s3://{new_bucket(client)}/registry", client)


def _break(registry, number: int, bundle_dir: Path) -> None:
    """Leave version `number` with a model file but no metadata.json (as a crash would)."""
    if isinstance(registry, LocalRegistry):
        directory = registry.root / "churn" / "versions" / str(number)
        directory.mkdir(parents=True)
        shutil.copy(bundle_dir / MODEL_FILE, directory / MODEL_FILE)
    else:
        key = f"{registry.prefix}/churn/versions/{number}/{MODEL_FILE}"
        put_bytes(registry.client, registry.bucket, key, b"half", content_type="x/y")


@pytest.mark.parametrize("name", ["churn\n", "churn\n\n", "Churn", "-churn", "a/b", ""])
def test_model_names_must_match_in_full(registry, name):
    assert check_name("churn") == "churn"
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.versions(name)


def test_a_broken_version_is_skipped_with_a_warning_and_repaired(
    registry, bundle_dir, caplog, capsys, moto
):
    registry.register("churn", bundle_dir, {"gate": {"blessed": True}})
    _break(registry, 2, bundle_dir)
    with caplog.at_level(logging.WARNING):
        rows = describe_versions(registry, "churn")
    assert [row["version"] for row in rows] == [1]
    assert "version(s) 2 have no metadata.json" in caplog.text
    assert registry.register("churn", bundle_dir, {}).version == 3  # later runs still work
    uri, env = registry.uri, moto.env()
    assert _cli(["registry", "repair", "--registry", uri, "--model", "churn"], env) == 0
    assert "removed broken version(s) 2" in capsys.readouterr().out
    assert registry.broken_versions("churn") == [] and registry.versions("churn") == [1, 3]
    assert _cli(["registry", "remove", "--registry", uri, "--model", "churn"], env) == 2
    promote(registry, "churn", 1)
    with pytest.raises(RegistryError, match="version 1 of 'churn' is champion"):
        registry.remove_version("churn", 1)
    registry.remove_version("churn", 3)
    assert registry.versions("churn") == [1]


def _cli(args: list[str], env: dict[str, str]) -> int:
    """`lifecycle ...` in-process, with the S3 endpoint's environment."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return main(args)


def test_the_override_reason_survives_a_double_rollback(registry, bundle_dir):
    registry.register("churn", bundle_dir, {"gate": {"blessed": True}})
    registry.register("churn", bundle_dir, {"gate": {"blessed": False}})
    promote(registry, "churn", 1)
    promote(registry, "churn", 2, override_reason="hotfix accepted by on-call")
    assert registry.alias_record("churn", CHAMPION)["override_reason"] == (
        "hotfix accepted by on-call"
    )
    assert rollback(registry, "churn") == 1
    assert "override_reason" not in registry.alias_record("churn", CHAMPION)
    assert rollback(registry, "churn") == 2
    record = registry.alias_record("churn", CHAMPION)
    assert (record["version"], record["previous"]) == (2, 1)
    assert record["override_reason"] == "hotfix accepted by on-call"
    assert registry.aliases("churn") == {CHAMPION: 2, PREVIOUS: 1}


def test_an_unreachable_or_unwritable_registry_fails_before_training(tmp_path, churn, moto):
    data = tmp_path / "data.csv"
    churn.to_csv(data, index=False)
    (tmp_path / "file").write_text("not a directory")
    for registry in (str(tmp_path / "file" / "registry"), "s3://absent-bucket/registry"):
        config = parse_config(
            {
                "data": {"source": str(data), "target": "churned"},
                "registry": registry,
                "output": str(tmp_path / "out"),
            }
        )
        with pytest.MonkeyPatch.context() as patch:
            for key, value in moto.env().items():
                patch.setenv(key, value)
            with pytest.raises(LifecycleError) as refused:
                pipeline_arguments(config)
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"registry {registry}: ")
    unreachable = S3Registry(
        "s3://bucket/registry",
        s3_client(
            S3Config.from_env(
                {**moto.env(), "S3_ENDPOINT": "http://127.0.0.1:9"},
                retries=0,
                connect_timeout=0.5,
            )
        ),
    )
    with pytest.raises(RegistryError, match="endpoint unreachable"):
        unreachable.check_writable()


def _namespace_available() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _namespace_available(), reason="needs `unshare -rm` to mount a small tmpfs")
@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_promote_on_a_full_or_read_only_disk_is_one_line_and_leaves_nothing(
    disk, tmp_path, bundle_dir
):
    """A real tmpfs of 1 MiB in a private mount namespace, filled up or remounted read-only."""
    source = tmp_path / "source"
    registry = LocalRegistry(source)
    for _ in range(2):
        registry.register("churn", bundle_dir, {"gate": {"blessed": True}})
    promote(registry, "churn", 1)
    mount = tmp_path / "mnt"
    mount.mkdir()
    spoil = (
        f"cat /dev/zero > {mount}/filler 2>/dev/null || true"
        if disk == "full"
        else f"mount -o remount,ro {mount}"
    )
    script = f"""
set -e
mount -t tmpfs -o size=1m tmpfs {mount}
cp -a {source} {mount}/registry
{spoil}
set +e
{sys.executable} -m kfp_lifecycle.cli registry promote --registry {mount}/registry \
    --model churn --version 2
echo "exit=$?"
ls -A {mount}/registry/churn/aliases
cat {mount}/registry/churn/aliases/champion.json
"""
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    errors = done.stderr.strip().splitlines()
    assert "exit=2" in done.stdout, done.stdout + done.stderr
    assert len(errors) == 1 and errors[0].startswith("error: cannot move alias 'champion'")
    assert ("No space left" if disk == "full" else "Read-only file system") in errors[0]
    assert "Traceback" not in done.stderr
    listing = done.stdout.split("exit=2")[1].split("{")[0].split()
    assert listing == [f"{CHAMPION}.json"]  # no temporary file left behind
    assert json.loads("{" + done.stdout.split("{", 1)[1])["version"] == 1


def test_the_registry_package_imports_no_kfp():
    """The model server imports it: a KFP import would slow and couple every server."""
    code = (
        "import sys, kfp_lifecycle.registry, kfp_lifecycle.storage; "
        "found = [m for m in sys.modules if m == 'kfp' or m.startswith('kfp.')]; "
        "print(found); sys.exit(1 if found else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
