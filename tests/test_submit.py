"""`lifecycle submit` and `lifecycle schedule`, with kfp.Client as the mocked boundary."""

from types import SimpleNamespace
from unittest import mock

import pytest

from kfp_lifecycle import cli, submit
from kfp_lifecycle.pipelines import COMPILED_DIR


@pytest.fixture
def kfp_client(monkeypatch):
    fake = mock.Mock()
    fake.create_run_from_pipeline_package.return_value = SimpleNamespace(run_id="run-1")
    fake.wait_for_run_completion.return_value = SimpleNamespace(state="SUCCEEDED")
    fake.create_experiment.return_value = SimpleNamespace(experiment_id="exp-1")
    fake.create_recurring_run.return_value = SimpleNamespace(recurring_run_id="rec-1")
    made = []
    monkeypatch.setattr(submit, "client", lambda host, ns: made.append((host, ns)) or fake)
    fake.made = made
    return fake


def test_submit_sends_the_compiled_package_with_typed_params(kfp_client, capsys):
    args = ["submit", "training", "--host", "http://localhost:8080", "--wait",
            "--param", "data=s3://data/churn.csv", "--param", "target=churned",
            "--param", 'gate_options={"thresholds": {"roc_auc": 0.8}}',
            "--param", 'families=["linear"]']  # fmt: skip
    assert cli.main(args) == 0
    assert kfp_client.made == [("http://localhost:8080", None)]
    kfp_client.create_run_from_pipeline_package.assert_called_once_with(
        str(COMPILED_DIR / "training.yaml"),
        arguments={
            "data": "s3://data/churn.csv",
            "target": "churned",
            "gate_options": {"thresholds": {"roc_auc": 0.8}},
            "families": ["linear"],
        },
        experiment_name="kfp-lifecycle",
        namespace=None,
    )
    kfp_client.wait_for_run_completion.assert_called_once_with("run-1", timeout=10800)
    assert "http://localhost:8080/#/runs/details/run-1 (SUCCEEDED)" in capsys.readouterr().out


def test_a_failed_run_is_an_error(kfp_client, capsys):
    kfp_client.wait_for_run_completion.return_value = SimpleNamespace(state="FAILED")
    assert cli.main(["submit", "deployment", "--host", "http://kfp", "--wait"]) == 2
    assert "run run-1 ended FAILED" in capsys.readouterr().err


def test_schedule_creates_a_recurring_run(kfp_client):
    args = ["schedule", "training", "--host", "http://kfp", "--namespace", "team-a",
            "--cron", "0 0 3 * * *", "--name", "nightly", "--param", "target=churned"]  # fmt: skip
    assert cli.main(args) == 0
    kfp_client.create_experiment.assert_called_once_with("kfp-lifecycle", namespace="team-a")
    kfp_client.create_recurring_run.assert_called_once_with(
        experiment_id="exp-1",
        job_name="nightly",
        cron_expression="0 0 3 * * *",
        pipeline_package_path=str(COMPILED_DIR / "training.yaml"),
        params={"target": "churned"},
        no_catchup=True,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "nope", "--host", "h"], "unknown pipeline 'nope'"),
        (["submit", "training", "--host", "h", "--param", "x"], "--param expects NAME=VALUE"),
        (
            ["schedule", "training", "--host", "h", "--cron", "0 3 * * *", "--name", "n"],
            "six fields",
        ),
    ],
)
def test_bad_arguments_fail_before_any_call(kfp_client, capsys, args, message):
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    kfp_client.create_run_from_pipeline_package.assert_not_called()
    kfp_client.create_recurring_run.assert_not_called()


def test_a_parameter_the_pipeline_does_not_take_is_refused_before_sending(kfp_client, capsys):
    args = ["submit", "training", "--host", "http://kfp", "--param", 'thresholds={"auc": 1}']
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "the training pipeline has no parameter(s) thresholds; it takes:" in err
    assert "gate_options" in err
    kfp_client.create_run_from_pipeline_package.assert_not_called()


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "trainig", "--host", "http://kfp"],
        ["submit", "training", "--host", "http://kfp", "--param", "tagret=churned"],
        ["schedule", "training", "--host", "http://kfp", "--cron", "@daily", "--name", "n"],
    ],
)
def test_pipeline_and_parameters_are_checked_before_connecting(kfp_client, capsys, args):
    assert cli.main(args) == 2
    assert kfp_client.made == []  # no client was made: nothing connected
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_no_server_is_one_line_without_a_traceback(capsys):
    """A real kfp.Client against a closed local port."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(["submit", "training", "--host", f"http://127.0.0.1:{port}"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: cannot reach the KFP API at http://127.0.0.1:{port}: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err


def test_a_renamed_parameter_is_refused_naming_its_new_name(kfp_client, capsys):
    args = ["submit", "training", "--host", "http://kfp", "--param", "threshold_options={}"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "no parameter(s) threshold_options (threshold_options is now calibrate_options);" in err
    kfp_client.create_run_from_pipeline_package.assert_not_called()
    taken = {name: COMPILED_DIR.joinpath(f"{name}.yaml").read_text() for name in ("training",
             "monitoring", "deployment")}  # fmt: skip
    for old, new in submit.RENAMED_PARAMETERS.items():  # the new names are real parameters
        assert any(f"\n      {new}:\n" in text for text in taken.values()), new
        assert not any(f"\n      {old}:\n" in text for text in taken.values()), old
