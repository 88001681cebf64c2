"""Profile with Dask: the EDA report of components/profile.py drawn from a seeded sample, with
the row count and every column's missing share exact over all partitions.

The pandas engine samples the plots and statistics too (ProfileOptions.sample_rows); here
the distinct counts and the duplicate count also come from the sample, and the report's
warnings say so with the sample's size.
"""

from __future__ import annotations

from kfp_lifecycle.components.profile import Profile, ProfileOptions, profile_table
from kfp_lifecycle.dask_engine.validate import TableStatistics


def profile_statistics(
    stats: TableStatistics, target: str, task: str, options: ProfileOptions
) -> Profile:
    """profile_table on the sample, then the exact rows and missing shares put back."""
    sample = stats.sample
    if len(sample) > options.sample_rows:
        sample = sample.sample(options.sample_rows, random_state=options.seed)
    profile = profile_table(sample, target, task, options)
    profile.rows = stats.rows
    for column in profile.column_profiles:
        column.missing_share = round(stats.nulls[column.name] / stats.rows, 4)
        counts = stats.categories.get(column.name)
        if counts is not None:
            column.distinct = len(counts)
    if len(sample) < stats.rows:
        profile.warnings.append(
            f"dask engine: statistics, plots, distinct and duplicate counts from a seeded "
            f"sample of {len(sample):,} of {stats.rows:,} rows; row count and missing shares "
            "are exact"
        )
    return profile
