"""The pipeline configuration file: validated on load, errors name the bad key."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from kfp_lifecycle.config import (
    RENAMED_KEYS,
    LifecycleConfig,
    load_config,
    parse_config,
    reference_yaml,
    with_overrides,
)
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.core.tasks import METRICS
from kfp_lifecycle.families import FAMILIES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # they use the current names
        config = load_config(path)
    assert isinstance(config, LifecycleConfig)


def test_reference_example_is_fresh_and_lists_every_default():
    text = (EXAMPLES / "reference.yaml").read_text()
    assert text == reference_yaml(), "examples/reference.yaml is stale: run `make compile`"
    reference = yaml.safe_load(text)
    defaults = LifecycleConfig().model_dump(mode="json")
    for section, values in defaults.items():
        assert section in reference, f"examples/reference.yaml lacks section {section}"
        if isinstance(values, dict):
            assert set(reference[section]) == set(values), section
    assert parse_config(reference) == LifecycleConfig()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"split": {"strategy": "shuffle"}}, "config: split.strategy: Input should be"),
        ({"split": {"test_fraktion": 0.1}}, "config: split.test_fraktion: Extra inputs"),
        ({"balance": {"minority_share_threshold": 0.9}}, "balance.minority_share_threshold"),
        ({"modelz": {}}, "config: modelz: Extra inputs are not permitted"),
        ({"data": {"task": "ranking"}}, "data.task: Input should be 'auto'"),
        (["not", "a", "mapping"], "expected a mapping of sections, got list"),
    ],
)
def test_bad_keys_and_values_are_named(data, message):
    with pytest.raises(LifecycleError, match=message.replace("(", r"\(")):
        parse_config(data)


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {source: a.csv, target: y}\nsplit: {seed: 1, strategy: random}\n")
    config = with_overrides(load_config(path), {"split.seed": 7, "data.target": None})
    assert (config.split.seed, config.split.strategy, config.data.target) == (7, "random", "y")


def test_the_cli_reports_config_errors_in_one_line_per_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("split:\n  strategy: sideways\n")
    result = subprocess.run(
        [sys.executable, "-m", "kfp_lifecycle.cli", "run", "training", "--config", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}: split.strategy: Input should be")


def test_unknown_model_families_and_metrics_are_refused_listing_the_valid_ones():
    with pytest.raises(LifecycleError) as raised:
        parse_config({"models": {"families": ["lgbm", "linear"]}, "data": {"metric": "auk"}})
    lines = str(raised.value).splitlines()
    assert lines == [
        f"config: data.metric: metric 'auk' is unknown; valid: auto, {', '.join(METRICS)} "
        "(got 'auk')",
        f"config: models.families: unknown model family 'lgbm'; valid: {', '.join(FAMILIES)} "
        "(got ['lgbm', 'linear'])",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"data": {"task": "regression", "metric": "roc_auc"}},
            "data.metric: metric 'roc_auc' does not apply to regression; valid: auto, rmse, mae",
        ),
        ({"models": {"families": []}}, "models.families: name at least one model family"),
        ({"models": {"families": ["xgboost"] * 2}}, "models.families: repeated model family"),
    ],
)
def test_metric_must_fit_the_task_and_families_must_be_distinct(data, message):
    with pytest.raises(LifecycleError, match=message):
        parse_config(data)


def test_known_names_pass():
    config = parse_config(
        {"data": {"task": "classification", "metric": "f1"}, "models": {"families": ["linear"]}}
    )
    assert (config.data.metric, config.models.families) == ("f1", ["linear"])
    assert parse_config({"data": {"metric": "rmse"}}).data.metric == "rmse"  # task auto


# Every renamed section under its old name, with a value that is not the default, and the
# same under its new name (kfp_lifecycle.config.RENAMED_KEYS).
OLD_KEYS = {
    "cleaning": {"drop_duplicates": False},
    "preprocessing": {"numeric_imputation": "mean"},
    "imbalance": {"strategy": "undersample"},
    "diagnosis": {"sizes": [0.5, 1.0]},
    "explanation": {"repeats": 3},
    "decision_threshold": {"strategy": "balanced_accuracy"},
    "models": {"families": ["linear"], "tuning": {"trials": 3}},
}
NEW_KEYS = {
    "clean": {"drop_duplicates": False},
    "preprocess": {"numeric_imputation": "mean"},
    "balance": {"strategy": "undersample"},
    "diagnose": {"sizes": [0.5, 1.0]},
    "explain": {"repeats": 3},
    "calibrate": {"strategy": "balanced_accuracy"},
    "models": {"families": ["linear"], "tune": {"trials": 3}},
}


def test_old_config_keys_load_as_the_new_ones_with_a_deprecation_warning(caplog):
    nested = {f"models.{key}" for key in OLD_KEYS["models"] if key != "families"}
    assert set(RENAMED_KEYS) == set(OLD_KEYS) - {"models"} | nested  # every rename is here
    with pytest.warns(DeprecationWarning) as warned:
        old = parse_config(OLD_KEYS)
    assert old == parse_config(NEW_KEYS) != LifecycleConfig()
    expected = [
        f"config key '{o}' is deprecated: use '{n}' (removed in the next release)"
        for o, n in RENAMED_KEYS.items()
    ]
    assert [str(w.message) for w in warned] == expected
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == expected


def test_an_old_and_a_new_key_together_are_refused():
    with pytest.raises(LifecycleError, match="both 'cleaning' \\(deprecated\\) and 'clean'"):
        parse_config({"cleaning": {}, "clean": {}})


def test_the_cli_shows_the_deprecation_in_one_line(tmp_path):
    """What `lifecycle run training --config old.yaml` reads its config with, in a fresh
    process with no logging set up: the warning is one line on stderr."""
    path = tmp_path / "old.yaml"
    path.write_text("cleaning: {drop_duplicates: false}\n")
    flags = "data target task metric output registry model_name families gate threshold"
    flags += " validation_fraction test_fraction seed time_budget engine"
    code = (
        "import argparse; from kfp_lifecycle.cli import training_config; "
        f"args = argparse.Namespace(config={str(path)!r}, **dict.fromkeys({flags.split()!r})); "
        "print(training_config(args).clean.drop_duplicates)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr
    assert result.stderr.splitlines() == [
        "config key 'cleaning' is deprecated: use 'clean' (removed in the next release)"
    ]


def test_every_step_section_is_named_after_its_step():
    """A section holding a step's options (a model from components/<step>.py) is that step's
    name, at any depth (models.tune, monitoring.retrain, ...)."""

    def sections(model, prefix=""):
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield f"{prefix}{name}", kind
                yield from sections(kind, f"{prefix}{name}.")

    steps = {
        dotted: kind.__module__.rpartition(".")[2]
        for dotted, kind in sections(LifecycleConfig)
        if kind.__module__.startswith("kfp_lifecycle.components.")
    }
    assert {d.rpartition(".")[2] for d in steps} >= {"clean", "calibrate", "tune", "retrain"}
    assert [d for d, step in steps.items() if d.rpartition(".")[2] != step] == []
