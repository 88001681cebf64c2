"""What a person sees: the project logs, the CLI decides; framework internals only on request."""

import logging

import pytest

from kfp_lifecycle import cli
from kfp_lifecycle.console import PROJECT, show_logs


@pytest.fixture
def clean_logging():
    """Leave logging as the test found it (show_logs changes process-wide state)."""
    project, root = logging.getLogger(PROJECT), logging.getLogger()
    saved = (project.handlers[:], project.level, root.handlers[:], root.level)
    yield
    project.handlers[:], project.level, root.handlers[:], root.level = saved


def _say() -> None:
    logging.getLogger(f"{PROJECT}.components.evaluate").info("test metrics: roc_auc=0.9000")
    logging.getLogger(f"{PROJECT}.registry").warning("v3 is unsigned")
    logging.getLogger("kfp.local.pipeline_orchestrator").info("Executing task 'train'")


def test_by_default_a_person_sees_the_projects_lines_not_the_frameworks(clean_logging, capsys):
    show_logs()
    show_logs()  # a second call replaces the first: never two copies of a line
    _say()
    out, err = capsys.readouterr()
    assert out == "test metrics: roc_auc=0.9000\n"
    assert err == "v3 is unsigned\n"


def test_verbose_adds_the_frameworks_lines_with_their_names(clean_logging, capsys):
    show_logs(verbose=True)
    _say()
    out, err = capsys.readouterr()
    assert out == "test metrics: roc_auc=0.9000\n"
    assert err.splitlines() == [
        "v3 is unsigned",
        "INFO kfp.local.pipeline_orchestrator: Executing task 'train'",
    ]


def test_the_cli_sets_logging_up_before_its_command_runs(clean_logging, capsys, tmp_path):
    """A command's own lines (logged by the library) reach stdout as the prints they replaced
    did; its error stays one line on stderr."""
    assert cli.main(["export", "--model", str(tmp_path / "absent"), "--output", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    _say()
    out, err = capsys.readouterr()
    assert out == "test metrics: roc_auc=0.9000\n" and err == "v3 is unsigned\n"
