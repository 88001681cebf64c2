"""`lifecycle deploy --mode`, `rollout bluegreen|dark` and `abtest` against a registry on S3
(moto) and the fake Kubernetes API: the exact requests, and dry runs that send nothing."""

import yaml
from test_abtest import simulated_log
from test_deploy import FakeCustomObjects
from test_deploy_cli import _uri, api, s3_registry  # noqa: F401 (fixtures)
from test_rollout import dry_run_patches

from kfp_lifecycle import abtest, cli, deploy
from kfp_lifecycle.components.deploy import deploy_blessed


def _deploy_standard(registry):
    args = ["deploy", "--model", f"{registry}/churn@champion", "--name", "churn"]
    assert cli.main([*args, "--mode", "standard"]) == 0


def test_dark_and_blue_green_dry_runs_are_yaml_and_send_nothing(s3_registry, api, capsys):  # noqa: F811
    registry, _ = s3_registry
    _deploy_standard(registry)
    assert api.writes[0][-1]["spec"]["predictor"]["name"] == "v1"
    capsys.readouterr()
    for action in ("dark", "bluegreen"):
        args = ["rollout", action, "--name", "churn", "--model", f"{registry}/churn@3"]
        assert cli.main([*args, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert [d for d in yaml.safe_load_all(out) if d] == []  # patches: comments only
        patches = dry_run_patches(out)
        assert patches[0]["spec"]["canary"][0]["trafficPercent"] == 0
        assert patches[0]["metadata"]["annotations"][deploy.STRATEGY_ANNOTATION] == action
        if action == "bluegreen":  # then the switch, in one patch
            assert patches[1]["spec"]["canary"][0]["trafficPercent"] == 100
    assert len(api.writes) == 1
    assert cli.main(["rollout", "dark", "--name", "churn", "--model", f"{registry}/churn@3"]) == 0
    assert api.writes[-1][-1]["spec"]["canary"][0]["predictor"]["name"] == "v3"
    capsys.readouterr()
    assert cli.main(["rollout", "status", "--name", "churn"]) == 0
    status = capsys.readouterr().out
    assert f"stable:   v1 {_uri(registry, 1)} at 100%" in status
    assert f"variant:  v3 {_uri(registry, 3)} at 0% (no status yet)" in status
    assert "strategy: dark" in status
    assert cli.main(["rollout", "bluegreen", "--name", "churn", "--model", f"{registry}/churn@3",
                     "--smoke", "x.json"]) == 2  # fmt: skip
    assert "a dark of" in capsys.readouterr().err  # one rollout at a time
    assert cli.main(["rollout", "rollback", "--name", "churn"]) == 0
    assert api.writes[-1][-1] == {
        "spec": {"canary": []},
        "metadata": {"annotations": {deploy.STRATEGY_ANNOTATION: None}},
    }


def test_abtest_start_status_and_conclude_promote_the_winner(s3_registry, api, tmp_path, capsys):  # noqa: F811
    registry, _ = s3_registry
    _deploy_standard(registry)
    start = ["abtest", "start", "--name", "churn", "--model", f"{registry}/churn@3",
             "--model", f"{registry}/churn@2", "--share", "30", "--share", "30",
             "--baseline", "0.8", "--min-effect", "0.05"]  # fmt: skip
    assert cli.main(start) == 2
    assert (
        "churn/versions/2/ was not blessed by the gate (FAIL: roc_auc)" in capsys.readouterr().err
    )
    assert cli.main([*start, "--override-reason", "compare the refused one as well"]) == 0
    body = api.writes[-1][-1]
    assert [(c["predictor"]["name"], c["trafficPercent"]) for c in body["spec"]["canary"]] == [
        ("v3", 30),
        ("v2", 30),
    ]
    plan = abtest.AbTestPlan.model_validate_json(
        body["metadata"]["annotations"][abtest.PLAN_ANNOTATION]
    )
    assert (plan.control, plan.challengers) == ("1", {"3": "v3", "2": "v2"})
    assert f"{plan.rows_per_arm} labelled rows per arm" in capsys.readouterr().out

    log, labels = simulated_log({"1": 0.80, "3": 0.88, "2": 0.80}, plan.rows_per_arm, seed=11)
    day = log["timestamp"].iloc[0].strftime("%Y-%m-%d")
    partition = tmp_path / "log" / "churn" / f"date={day}"
    partition.mkdir(parents=True)
    log.to_parquet(partition / "batch.parquet")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    judged = ["--name", "churn", "--log", str(tmp_path / "log"), "--labels",
              str(tmp_path / "labels.csv"), "--label-column", "churned",
              "--start", day, "--end", day]  # fmt: skip
    report = tmp_path / "ab.html"
    assert cli.main(["abtest", "status", *judged, "--report", str(report)]) == 0
    assert capsys.readouterr().out.startswith("winner: 3\n")
    assert "A/B test: churn" in report.read_text()
    writes = len(api.writes)
    assert cli.main(["abtest", "conclude", *judged, "--dry-run"]) == 0
    assert len(api.writes) == writes
    assert cli.main(["abtest", "conclude", *judged]) == 0
    promote = api.writes[-1][-1]  # rollout promote's own plan, for variant v3
    assert promote["spec"] == {
        "predictor": {"name": "v3", "model": {"storageUri": _uri(registry, 3)}},
        "canary": [],
    }
    assert promote["metadata"]["annotations"][deploy.STRATEGY_ANNOTATION] is None
    assert api.objects["churn"]["spec"]["canary"] == []


def test_a_short_log_is_no_verdict_and_conclude_refuses(s3_registry, api, tmp_path, capsys):  # noqa: F811
    registry, _ = s3_registry
    _deploy_standard(registry)
    args = ["abtest", "start", "--name", "churn", "--model", f"{registry}/churn@3",
            "--baseline", "0.8", "--min-effect", "0.05"]  # fmt: skip
    assert cli.main(args) == 0
    log, labels = simulated_log({"1": 0.8, "3": 0.99}, 100, seed=1)
    day = log["timestamp"].iloc[0].strftime("%Y-%m-%d")
    (tmp_path / "log" / "churn" / f"date={day}").mkdir(parents=True)
    log.to_parquet(tmp_path / "log" / "churn" / f"date={day}" / "b.parquet")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    judged = ["--name", "churn", "--log", str(tmp_path / "log"), "--labels",
              str(tmp_path / "labels.csv"), "--label-column", "churned",
              "--start", day, "--end", day]  # fmt: skip
    writes = len(api.writes)
    assert cli.main(["abtest", "conclude", *judged]) == 2
    assert "no verdict yet: no difference yet" in capsys.readouterr().err
    assert len(api.writes) == writes


def test_the_deploy_step_runs_standard_mode_canaries_and_resumes_one(s3_registry):  # noqa: F811
    registry, _ = s3_registry
    fake = FakeCustomObjects()
    kserve = deploy.KServeApi(fake)
    spec = deploy.ServiceSpec("churn", "", canary_percent=10)
    first = deploy_blessed(kserve, spec, f"{registry}/churn@champion", "standard")
    assert first.action == "created"
    assert fake.objects["churn"]["metadata"]["annotations"][deploy.DEPLOYMENT_MODE_ANNOTATION] == (
        "Standard"
    )
    started = deploy_blessed(kserve, deploy.ServiceSpec("churn", "", canary_percent=10),
                             f"{registry}/churn@3")  # fmt: skip
    assert started == ("canary", _uri(registry, 3), "3", "1")
    assert fake.writes[-1][-1]["spec"]["canary"][0]["trafficPercent"] == 10
    resumed = deploy_blessed(kserve, deploy.ServiceSpec("churn", ""), f"{registry}/churn@3")
    assert resumed == started and len(fake.writes) == 2


def test_missing_and_bad_abtest_flags_are_one_line_errors(s3_registry, api, capsys):  # noqa: F811
    registry, _ = s3_registry
    _deploy_standard(registry)
    base = ["abtest", "start", "--name", "churn", "--model", f"{registry}/churn@3"]
    assert cli.main(base) == 2
    assert "abtest start needs --baseline, --min-effect" in capsys.readouterr().err
    assert cli.main([*base, "--baseline", "0.8", "--min-effect", "0.05", "--alpha", "0.7"]) == 2
    assert "abtest start: alpha: Input should be less than 0.5 (got 0.7)" in capsys.readouterr().err
    assert cli.main(["abtest", "status", "--name", "churn"]) == 2
    assert "abtest status needs --log, --labels" in capsys.readouterr().err
    assert len(api.writes) == 1
