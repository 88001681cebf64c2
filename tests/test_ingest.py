import pandas as pd
import pytest

from kfp_lifecycle.components.ingest import read_table, to_parquet
from kfp_lifecycle.core.errors import DataError


def test_reads_csv_and_parquet_alike(tmp_path, churn):
    churn.to_csv(tmp_path / "t.csv", index=False)
    churn.to_parquet(tmp_path / "t.parquet", index=False)
    from_csv = read_table(tmp_path / "t.csv")
    from_parquet = read_table(f"file://{tmp_path / 't.parquet'}")
    assert from_csv.shape == from_parquet.shape == churn.shape
    assert list(from_csv.columns) == list(churn.columns)
    assert from_csv["age"].isna().sum() == churn["age"].isna().sum()


def test_detects_semicolon_delimiter(tmp_path):
    (tmp_path / "t.csv").write_text("a;b;y\n1;x;0\n2;y;1\n")
    frame = read_table(tmp_path / "t.csv")
    assert list(frame.columns) == ["a", "b", "y"]
    assert frame["b"].tolist() == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"a,b,target\n", "has a header but no rows"),
        (b"name,target\ncaf\xe9,1\nbar,0\n", "not UTF-8"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_table(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"expected a \.csv or \.parquet"):
        read_table(tmp_path / "data.xlsx")


def test_mixed_type_object_column_is_stored_as_text(tmp_path):
    frame = pd.DataFrame({"mixed": [1, "two", None], "y": [0, 1, 0]})
    to_parquet(frame, tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["mixed"].tolist()[:2] == ["1", "two"]
    assert pd.isna(back["mixed"].iloc[2])
