"""What each step component runs when its engine is dask: open the client, run the step's
Dask functions, return what the component writes (the same report objects as pandas).

`options` is the step's dask_options and `scheduler` its dask_scheduler parameter; the
address they lead to is chosen in one place, engine.settings_from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfp_lifecycle.components.clean import CleanOptions, CleanReport
from kfp_lifecycle.components.preprocess import PreprocessOptions
from kfp_lifecycle.components.profile import Profile, ProfileOptions
from kfp_lifecycle.components.split import SplitOptions, SplitReport
from kfp_lifecycle.components.validate import ValidationResult, champion_contract
from kfp_lifecycle.dask_engine.cluster import open_client
from kfp_lifecycle.dask_engine.engine import DASK, log_to_step, resolve_engine, settings_from
from kfp_lifecycle.dask_engine.tables import read_dataset


def uses_dask(engine: str, data: str | Path) -> bool:
    """True when the step should run on Dask (auto measures `data`); shows its progress."""
    if engine == "pandas":
        return False
    log_to_step()
    return resolve_engine(engine, data) == DASK


def read_training_rows(path: str, engine: str, options: dict) -> Any:
    """A step's training rows: all of them (pandas), or a seeded sample (dask)."""
    import pandas as pd

    if not uses_dask(engine, path):
        return pd.read_parquet(path)
    from kfp_lifecycle.dask_engine.tables import read_sample

    return read_sample(path, settings_from(options).sample_rows)


def ingest(source: str, destination: str, options: dict, scheduler: str = "") -> dict[str, Any]:
    from kfp_lifecycle.dask_engine.ingest import ingest_table, source_files

    if not source.startswith("s3://"):
        source_files(source)  # a missing local source fails at once, not after a connect
    settings = settings_from(options, scheduler)
    with open_client(settings):
        return ingest_table(source, destination, settings)


def validate(
    path: str, target: str, task: str, metric: str, registry: str, model_name: str, options: dict,
    scheduler: str = "", positive_class: str = "",
) -> tuple[ValidationResult, list, dict]:  # fmt: skip
    """The result, the champion contract's findings (on the sample) and the new contract."""
    from kfp_lifecycle.dask_engine import validate as steps

    settings = settings_from(options, scheduler)
    with open_client(settings):
        stats = steps.table_statistics(read_dataset(path), target, settings.sample_rows)
    result = steps.validate_statistics(stats, target, task, metric, positive_class)
    findings = steps.enforce_on_sample(stats, champion_contract(registry, model_name))
    return result, findings, steps.contract_from(stats, target)


def profile(
    path: str, target: str, task: str, profile_options: ProfileOptions, options: dict,
    scheduler: str = "",
) -> tuple[Profile, Any]:  # fmt: skip
    """The profile and the sampled rows its plots are drawn from."""
    from kfp_lifecycle.dask_engine.profile import profile_statistics
    from kfp_lifecycle.dask_engine.validate import table_statistics

    settings = settings_from(options, scheduler)
    rows = max(settings.sample_rows, profile_options.sample_rows)
    with open_client(settings):
        stats = table_statistics(read_dataset(path), target, rows, profile_options.seed)
    return profile_statistics(stats, target, task, profile_options), stats.sample


def clean(
    path: str, target: str, destination: str, clean_options: CleanOptions, options: dict,
    scheduler: str = "",
) -> CleanReport:  # fmt: skip
    from kfp_lifecycle.dask_engine.clean import clean_table

    with open_client(settings_from(options, scheduler)):
        return clean_table(read_dataset(path), target, destination, clean_options)


def split(
    path: str, target: str, task: str, destinations: dict, split_options: SplitOptions,
    options: dict, scheduler: str = "",
) -> SplitReport:  # fmt: skip
    from kfp_lifecycle.dask_engine.split import split_table

    with open_client(settings_from(options, scheduler)):
        return split_table(read_dataset(path), target, task, destinations, split_options)


def preprocess(
    path: str, target: str, task: str, preprocess_options: PreprocessOptions, options: dict,
    scheduler: str = "",
) -> tuple[Any, Any, Any, dict]:  # fmt: skip
    from kfp_lifecycle.dask_engine.preprocess import fit_preprocessor_dask

    settings = settings_from(options, scheduler)
    with open_client(settings):
        return fit_preprocessor_dask(
            read_dataset(path), target, task, preprocess_options, settings.sample_rows
        )


def train(
    train_path: str, validation_path: str, target: str, task: str, family: str,
    preprocessor: Any, schema: Any, metric: str, tuning: Any, seed: int, options: dict,
    scheduler: str = "", positive: Any = None, **pandas_options: Any,
) -> tuple[Any, dict]:  # fmt: skip
    """xgboost distributed; the other families on a sample (dask_engine/train.py), the
    validate step's positive class last among a binary task's classes, as with pandas."""
    from kfp_lifecycle.dask_engine.train import DISTRIBUTED, train_distributed, train_on_sample

    settings = settings_from(options, scheduler)
    with open_client(settings):
        rows, held_out = read_dataset(train_path), read_dataset(validation_path)
        common = (target, task)
        if family in DISTRIBUTED:
            return train_distributed(
                rows, held_out, *common, preprocessor, schema, metric, tuning, settings, seed,
                positive=positive,
            )  # fmt: skip
        return train_on_sample(
            rows, held_out, *common, family, preprocessor, schema, metric, tuning, settings,
            seed, positive=positive, **pandas_options,
        )  # fmt: skip
