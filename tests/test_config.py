"""The pipeline configuration file: validated on load, errors name the bad key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kfp_lifecycle.config import (
    LifecycleConfig,
    load_config,
    parse_config,
    reference_yaml,
    with_overrides,
)
from kfp_lifecycle.errors import LifecycleError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_load(path):
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
        ({"imbalance": {"minority_share_threshold": 0.9}}, "imbalance.minority_share_threshold"),
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
