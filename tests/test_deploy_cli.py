"""`lifecycle deploy` and `lifecycle rollout` against a registry on S3 (moto) and a fake API."""

import json

import jsonschema
import pytest
import yaml
from bundles import build_bundle, churn_evaluation, gate_decision
from s3_server import new_bucket, running_moto
from test_deploy import CRDS, FakeCustomObjects

from kfp_lifecycle import cli, deploy
from kfp_lifecycle.components.deploy import deploy_blessed
from kfp_lifecycle.components.register import register_bundle
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.registry import open_registry, set_alias


@pytest.fixture(scope="module")
def s3_registry(tmp_path_factory, churn):
    """A registry on S3: version 1 (blessed, champion), 2 (not blessed), 3 (blessed)."""
    bundle = build_bundle(tmp_path_factory.mktemp("bundle"), churn)
    with running_moto() as moto, pytest.MonkeyPatch.context() as patch:
        for name, value in moto.env().items():
            patch.setenv(name, value)
        registry = f"s3://{new_bucket(moto.client())}/registry"
        for blessed in (True, False, True):
            register_bundle(
                str(bundle), registry, "churn", churn_evaluation(),
                gate_decision(blessed, ["FAIL: roc_auc"] if not blessed else []),
                {"run_id": "r"},
            )  # fmt: skip
        set_alias(open_registry(registry), "churn", "champion", 1)
        yield registry, patch


def _uri(registry, version):
    return f"{registry}/churn/versions/{version}/"


@pytest.fixture
def api(monkeypatch):
    fake = FakeCustomObjects()
    monkeypatch.setattr(deploy.KServeApi, "__init__", lambda self: setattr(self, "api", fake))
    return fake


def test_deploy_canary_promote_and_rollback_through_the_cli(s3_registry, api, capsys):
    registry, _ = s3_registry
    assert cli.main(["deploy", "--model", f"{registry}/churn@champion", "--name", "churn"]) == 0
    (create,) = api.writes
    assert create[0] == "create"
    assert create[-1]["spec"]["predictor"]["model"]["storageUri"] == f"{registry}/churn/versions/1/"

    assert cli.main(["deploy", "--model", f"{registry}/churn@2", "--name", "churn"]) == 2
    assert "was not blessed by the gate (FAIL: roc_auc)" in capsys.readouterr().err
    assert len(api.writes) == 1  # nothing sent

    accepted = ["--canary", "20", "--override-reason", "hotfix"]
    assert cli.main(["deploy", "--model", f"{registry}/churn@2", "--name", "churn", *accepted]) == 0
    assert api.writes[-1][-1]["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert "kubectl -n kfp-lifecycle patch isvc churn --type merge" in capsys.readouterr().out

    assert cli.main(["rollout", "set-traffic", "50", "--name", "churn"]) == 0
    assert cli.main(["rollout", "promote", "--name", "churn"]) == 0
    assert cli.main(["rollout", "rollback", "--name", "churn"]) == 0
    assert [call[-1] for call in api.writes[-3:]] == [
        {"spec": {"predictor": {"canaryTrafficPercent": 50}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
        {
            "metadata": {"annotations": {
                "kfp-lifecycle.io/model-uri": f"{registry}/churn/versions/1/",
                deploy.PREVIOUS_STORAGE_URI: None,
            }},
            "spec": {"predictor": {"model": {"storageUri": f"{registry}/churn/versions/1/"}}},
        },
    ]  # fmt: skip
    assert cli.main(["rollout", "status", "--name", "churn"]) == 0
    out = capsys.readouterr().out
    assert f"model:    {registry}/churn/versions/1/" in out
    assert out.endswith("# kubectl equivalent:\nkubectl -n kfp-lifecycle get isvc churn\n")


def test_dry_run_sends_nothing_and_prints_yaml_only(s3_registry, api, capsys):
    """The output is the manifest (notes and commands as comments): `| kubectl apply -f -`."""
    registry, _ = s3_registry
    args = ["deploy", "--model", f"{registry}/churn@champion", "--name", "churn", "--dry-run"]
    assert cli.main(args) == 0
    assert api.writes == []
    out = capsys.readouterr().out
    assert "kubectl -n kfp-lifecycle apply -f -" in out
    documents = [doc for doc in yaml.safe_load_all(out) if doc is not None]
    assert len(documents) == 1
    schema = json.loads((CRDS / "serving.kserve.io" / "inferenceservice_v1beta1.json").read_text())
    jsonschema.validate(documents[0], schema)
    assert documents[0]["kind"] == "InferenceService"
    assert documents[0]["spec"]["predictor"]["model"]["storageUri"] == _uri(registry, 1)
    assert all(line.startswith("#") for line in out.splitlines() if "kubectl" in line)

    # An update is a patch: in a dry run it is a comment, and the output still parses.
    assert cli.main(["deploy", "--model", f"{registry}/churn@champion", "--name", "churn"]) == 0
    capsys.readouterr()
    update = ["deploy", "--model", f"{registry}/churn@3", "--name", "churn", "--dry-run"]
    assert cli.main(update) == 0
    out = capsys.readouterr().out
    assert "# kubectl -n kfp-lifecycle patch isvc churn --type merge" in out
    assert [doc for doc in yaml.safe_load_all(out) if doc is not None] == []
    assert len(api.writes) == 1


def test_local_bundles_are_not_deployable(tmp_path, churn, capsys):
    bundle = build_bundle(tmp_path, churn)
    assert cli.main(["deploy", "--model", str(bundle), "--name", "churn", "--dry-run"]) == 2
    assert "is not on S3" in capsys.readouterr().err


def test_pipeline_deploy_step_creates_then_canaries_only_blessed_versions(s3_registry):
    registry, _ = s3_registry
    fake = FakeCustomObjects()
    api = deploy.KServeApi(fake)
    first = deploy_blessed(api, deploy.ServiceSpec("churn", ""), f"{registry}/churn@champion")
    assert first.action == "created" and first.canary_version == "1"
    with pytest.raises(LifecycleError, match=r"not blessed by the gate \(.*\): refusing to deploy"):
        deploy_blessed(api, deploy.ServiceSpec("churn", ""), f"{registry}/churn@2")
    assert len(fake.writes) == 1


def test_a_deploy_during_a_canary_is_refused_and_sends_nothing(s3_registry, api, capsys):
    registry, _ = s3_registry
    assert cli.main(["deploy", "--model", f"{registry}/churn@champion", "--name", "churn"]) == 0
    assert cli.main(["deploy", "--model", f"{registry}/churn@3", "--name", "churn"]) == 0
    writes = len(api.writes)
    capsys.readouterr()
    assert cli.main(["deploy", "--model", f"{registry}/churn@champion", "--name", "churn"]) == 2
    error = capsys.readouterr().err
    assert f"a canary of {_uri(registry, 3)} is in progress at 10%" in error
    assert "promote or roll back first" in error
    assert len(api.writes) == writes


def test_deploying_the_served_version_changes_nothing(s3_registry):
    """Retraining that kept the champion: "unchanged", nothing sent, no canary to run."""
    registry, _ = s3_registry
    fake = FakeCustomObjects()
    api = deploy.KServeApi(fake)
    champion = f"{registry}/churn@champion"
    deploy_blessed(api, deploy.ServiceSpec("churn", ""), champion)
    again = deploy_blessed(api, deploy.ServiceSpec("churn", ""), champion)
    assert again == ("unchanged", _uri(registry, 1), "1", "")
    assert [call[0] for call in fake.writes] == ["create"]


def test_a_served_canary_nobody_judged_is_reported_with_its_stable_version(s3_registry):
    """v3 left at 10% by a run that stopped: deploying v3 again hands it to the rollout,
    compared against v1 (the stable model), not against itself."""
    registry, _ = s3_registry
    fake = FakeCustomObjects()
    api = deploy.KServeApi(fake)
    deploy_blessed(api, deploy.ServiceSpec("churn", ""), f"{registry}/churn@champion")
    spec = deploy.ServiceSpec("churn", "", canary_percent=10)
    started = deploy_blessed(api, spec, f"{registry}/churn@3")
    assert started == ("canary", _uri(registry, 3), "3", "1")
    resumed = deploy_blessed(api, deploy.ServiceSpec("churn", ""), f"{registry}/churn@3")
    assert resumed == started
    assert [call[0] for call in fake.writes] == ["create", "patch"]


def test_wait_until_ready_needs_the_newest_revision_ready():
    fake = FakeCustomObjects()
    api = deploy.KServeApi(fake)
    api.apply(deploy.plan_deploy(deploy.ServiceSpec("churn", "s3://m/v/1/"), None)[0])
    service = fake.objects["churn"]
    service["status"] = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {"predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r1"}},
    }

    class Clock:
        now = 0.0

        def monotonic(self):
            return self.now

        def sleep(self, seconds):
            self.now += seconds
            if self.now >= 10:  # the new revision becomes ready after 10 s
                service["status"]["components"]["predictor"]["latestReadyRevision"] = "r2"

    clock = Clock()
    assert deploy.wait_until_ready(api, "churn", "kfp-lifecycle", 60, 5, clock)
    assert clock.now == 10
    service["status"]["conditions"] = [{"type": "Ready", "status": "False", "message": "pull"}]
    with pytest.raises(LifecycleError, match="not ready after 20s: Ready=False pull"):
        deploy.wait_until_ready(api, "churn", "kfp-lifecycle", 20, 5, Clock())


def test_building_the_cli_parser_does_not_import_kserve():
    """Importing kserve parses sys.argv with its server's flags (abbreviations included:
    `--config` reads as its `--configure_logging`), so the CLI imports it only to deploy."""
    import subprocess
    import sys

    code = (
        "import sys; from kfp_lifecycle import cli; cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kserve'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
