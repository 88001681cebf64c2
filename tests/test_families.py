"""The model family registry: every family declares all it needs, the configuration and the
CLI accept exactly the registered names, and no family module needs kfp."""

import subprocess
import sys

import optuna
import pytest
from sklearn.base import clone

from kfp_lifecycle import cli
from kfp_lifecycle.components.tune import TuneOptions, defaults_of, fixed_params
from kfp_lifecycle.config import LifecycleConfig, parse_config
from kfp_lifecycle.core.bundle import PINNED_LIBRARIES
from kfp_lifecycle.core.errors import DataError, LifecycleError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION
from kfp_lifecycle.families import (
    DEFAULT_FAMILIES,
    EXPLAINERS,
    FAMILIES,
    Diagnosis,
    Family,
    get_family,
)

TASKS = (CLASSIFICATION, REGRESSION)


def _trial() -> optuna.Trial:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()


def test_the_registry_holds_every_family_module_in_order():
    assert list(FAMILIES) == [
        "linear", "random_forest", "hist_gradient_boosting", "xgboost", "lightgbm",
    ]  # fmt: skip
    assert all(isinstance(f, Family) and f.name == name for name, f in FAMILIES.items())
    # the defaults keep the demo and CI as they were: LightGBM is chosen by name only
    assert DEFAULT_FAMILIES == ["linear", "random_forest", "hist_gradient_boosting", "xgboost"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_declares_what_each_step_reads(name, task):
    family = FAMILIES[name]
    estimator = family.estimator(task, seed=3)
    params = estimator.get_params()
    assert clone(estimator).get_params() == params  # scikit-learn compatible
    assert hasattr(estimator, "predict_proba") == (task == CLASSIFICATION)
    # tuning: the space names real parameters; the defaults' trial reads them back
    space = family.search_space(_trial(), task)
    assert space and set(space) <= set(params), set(space) - set(params)
    assert set(defaults_of(estimator, name, task)) == set(space)
    assert family.estimator(task, space).get_params().items() >= space.items()
    # diagnosis: a real regularisation parameter, a grid, advice for both verdicts
    knob = family.diagnosis(task)
    assert isinstance(knob, Diagnosis) and knob.param in params and len(knob.grid) >= 3
    assert knob.advice("overfitting") and knob.advice("underfitting")
    # explanation: per-prediction contributions exactly when the explainer computes them
    assert family.explainer in EXPLAINERS
    assert (family.contributions is not None) == (family.explainer != "permutation")
    assert family.summary and isinstance(family.needs_scaling, bool)
    assert family.library in PINNED_LIBRARIES  # its version is recorded in every bundle
    stopping = family.early_stopping
    if stopping is not None:
        assert stopping.rounds_param in params and stopping.trees_param in params
        assert fixed_params(name, TuneOptions(early_stopping_rounds=7)) == {
            stopping.rounds_param: 7
        }
        assert family.fit_options([[0.0]], [0])  # the validation rows reach fit()
    else:
        assert fixed_params(name, TuneOptions()) == {} and family.fit_options([], []) == {}


def test_scaling_and_explainers_are_declared_per_family():
    assert [n for n, f in FAMILIES.items() if f.needs_scaling] == ["linear"]
    assert {n: f.explainer for n, f in FAMILIES.items()} == {
        "linear": "coefficients",
        "random_forest": "permutation",
        "hist_gradient_boosting": "permutation",
        "xgboost": "shap",
        "lightgbm": "shap",
    }
    assert {n for n, f in FAMILIES.items() if f.early_stopping} == {"xgboost", "lightgbm"}


def test_an_unknown_family_is_named_with_the_known_ones():
    with pytest.raises(DataError, match="unknown model family 'catboost'; choose from: linear, "):
        get_family("catboost")


def test_the_config_accepts_exactly_the_registered_families():
    for name in FAMILIES:
        config = parse_config({"models": {"families": [name]}})
        assert config.models.families == [name]
    assert LifecycleConfig().models.families == DEFAULT_FAMILIES
    with pytest.raises(LifecycleError, match=f"valid: {', '.join(FAMILIES)}"):
        parse_config({"models": {"families": ["lightgbm", "svm"]}})


def test_the_cli_lists_and_passes_the_registered_families(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "training", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "known: " + ", ".join(FAMILIES) in shown
    assert "default: " + ",".join(DEFAULT_FAMILIES) in shown
    args = parser.parse_args(["run", "training", "--families", "lightgbm, linear"])
    assert cli.training_config(args).models.families == ["lightgbm", "linear"]
    bad = parser.parse_args(["run", "training", "--families", "lightgbm,lgbm"])
    with pytest.raises(LifecycleError, match="unknown model family 'lgbm'"):
        cli.training_config(bad)


def test_family_modules_do_not_import_kfp():
    """The model server imports them to explain a prediction; it must not need KFP."""
    code = (
        "import sys; sys.modules['kfp'] = None\n"
        "from kfp_lifecycle.families import FAMILIES\n"
        "for family in FAMILIES.values():\n"
        "    for task in ('classification', 'regression'): family.estimator(task)\n"
        "print(','.join(FAMILIES))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ",".join(FAMILIES)
