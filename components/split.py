"""Split: seeded train/validation/test partitions, stratified on the target for classification."""

from dataclasses import dataclass

import pandas as pd
from kfp.dsl import Dataset, Input, Output
from sklearn.model_selection import train_test_split

from kfp_lifecycle.component import component
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.tasks import CLASSIFICATION


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def split_table(
    frame: pd.DataFrame,
    target: str,
    task: str,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 42,
) -> Splits:
    """Rows without a target are dropped; each row lands in exactly one partition."""
    for name, fraction in (("validation", validation_fraction), ("test", test_fraction)):
        if not 0 < fraction < 1:
            raise DataError(f"{name} fraction must be between 0 and 1, got {fraction}")
    if validation_fraction + test_fraction >= 0.9:
        raise DataError(
            f"validation ({validation_fraction}) and test ({test_fraction}) fractions leave "
            "too little for training; keep their sum below 0.9"
        )
    frame = frame[frame[target].notna()].reset_index(drop=True)
    stratify = frame[target] if task == CLASSIFICATION else None
    try:
        rest, test = train_test_split(
            frame, test_size=test_fraction, random_state=seed, stratify=stratify
        )
        stratify_rest = rest[target] if task == CLASSIFICATION else None
        train, validation = train_test_split(
            rest,
            test_size=validation_fraction / (1 - test_fraction),
            random_state=seed,
            stratify=stratify_rest,
        )
    except ValueError as error:
        raise DataError(f"cannot split {len(frame)} rows on '{target}': {error}") from None
    return Splits(train, validation, test)


@component
def split(
    dataset: Input[Dataset],
    target: str,
    task: str,
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 42,
):
    """Split the table into train, validation and test partitions.

    Args:
        dataset: The validated table.
        target: Name of the column to predict.
        task: classification (stratified split) or regression.
        train: Rows used to fit preprocessing and models.
        validation: Rows used to pick the champion and stop boosting early.
        test: Rows held out for the final, honest evaluation.
        validation_fraction: Share of rows for validation.
        test_fraction: Share of rows for test.
        seed: Random seed, so a rerun gives the same split.
    """
    import pandas as pd

    from kfp_lifecycle.components.split import split_table

    parts = split_table(
        pd.read_parquet(dataset.path), target, task, validation_fraction, test_fraction, seed
    )
    for name, artifact in (("train", train), ("validation", validation), ("test", test)):
        frame = getattr(parts, name)
        frame.to_parquet(artifact.path, index=False)
        artifact.metadata["rows"] = len(frame)
    print(
        f"split: {len(parts.train)} train, {len(parts.validation)} validation, "
        f"{len(parts.test)} test"
    )
