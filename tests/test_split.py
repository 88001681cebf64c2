import pytest

from kfp_lifecycle.components.split import split_table
from kfp_lifecycle.errors import DataError
from kfp_lifecycle.tasks import CLASSIFICATION, REGRESSION


def test_partitions_are_disjoint_and_cover_the_labelled_rows(churn):
    frame = churn.copy()
    frame.loc[:9, "churned"] = None
    frame["row_id"] = range(len(frame))
    parts = split_table(frame, "churned", CLASSIFICATION, 0.2, 0.2, seed=1)
    ids = [set(p["row_id"]) for p in (parts.train, parts.validation, parts.test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert set.union(*ids) == set(frame["row_id"][10:])
    assert len(parts.test) == pytest.approx(0.2 * (len(frame) - 10), abs=1)


def test_stratified_on_the_target(churn):
    parts = split_table(churn, "churned", CLASSIFICATION)
    overall = (churn["churned"] == "yes").mean()
    for part in (parts.train, parts.validation, parts.test):
        assert (part["churned"] == "yes").mean() == pytest.approx(overall, abs=0.01)


def test_same_seed_same_split_other_seed_other_split(regression):
    first = split_table(regression, "price", REGRESSION, seed=7)
    again = split_table(regression, "price", REGRESSION, seed=7)
    other = split_table(regression, "price", REGRESSION, seed=8)
    assert first.test.index.tolist() == again.test.index.tolist()
    assert first.test.index.tolist() != other.test.index.tolist()


@pytest.mark.parametrize(("validation", "test"), [(0.0, 0.2), (0.5, 0.45), (0.2, 1.2)])
def test_bad_fractions_are_refused(regression, validation, test):
    with pytest.raises(DataError, match="fraction"):
        split_table(regression, "price", REGRESSION, validation, test)
