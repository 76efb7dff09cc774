"""reid.matrices: the submission CSV format, round trips, malformed files, atomic writes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from reid.matrices import DistanceMatrix, MatrixFileError, format_rows


def _matrix(rng, m=4, n=6, scale=4.0):
    values = (rng.random((m, n)) * scale).astype(np.float32)
    return DistanceMatrix(values, np.arange(10, 10 + m), rng.integers(0, 3, n))


def test_writes_the_challenge_format_exactly(tmp_path):
    matrix = DistanceMatrix(np.array([[1.5, -1e-7], [0.123456, 12.0]], np.float32), [7, 3], [5, 5])
    path = matrix.write_csv(tmp_path / "m.csv")
    assert path.read_text() == (
        "0,5,5\n"
        f"3,{0.123456:10.5f},{12.0:10.5f}\n"  # rows sorted by query id
        "7,   1.50000,  -0.00000\n"  # printf keeps the sign of a negative value that rounds to 0
    )


def test_formatting_equals_python_percent_formatting_everywhere():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 3, (30, 50)), rng.normal(0, 400, (30, 50))])
    values[0, :8] = [-0.0, 0.0, 1 / 64, 0.000005, -0.000005, 9999.999989, -999.999989, 5e5]  # ties, widths
    values[1, 0] = np.nan
    halves = (np.arange(-3200, 3200) / 64.0 / 100).reshape(-1, 50)  # exact binary ties at the 6th decimal
    values = np.concatenate([values, halves])
    ids = np.arange(len(values))
    expected = "".join(f"{i}," + ",".join("%10.5f" % v for v in row) + "\n" for i, row in zip(ids, values))
    assert format_rows(ids, values).decode() == expected
    as_float32 = values[:30].astype(np.float32)
    expected32 = "".join(f"{i}," + ",".join("%10.5f" % v for v in row.tolist()) + "\n" for i, row in zip(ids, as_float32))
    assert format_rows(ids[:30], as_float32).decode() == expected32


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_round_trip_is_exact_to_the_written_precision(tmp_path, suffix):
    rng = np.random.default_rng(1)
    matrix = _matrix(rng, m=30, n=200)
    path = matrix.write_csv(tmp_path / f"m{suffix}")
    back = DistanceMatrix.read_csv(path)
    assert back.values.dtype == np.float64 and back.source == str(path)
    np.testing.assert_array_equal(back.query_ids, matrix.query_ids)
    np.testing.assert_array_equal(back.gallery_ids, matrix.gallery_ids)
    assert np.abs(back.values - matrix.values).max() <= 5e-6 + 1e-12
    np.testing.assert_array_equal(back.values, np.round(matrix.values.astype(np.float64), 5))
    again = back.write_csv(tmp_path / f"again{suffix}")
    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(path, "rb") as a, opener(again, "rb") as b:
        assert a.read() == b.read()
    assert DistanceMatrix.read_csv(path, dtype=np.float32).values.dtype == np.float32


def test_reads_and_writes_the_reference_files(reference_dir, tmp_path):
    case = np.load(reference_dir / "fusion_seed0.npz")
    for k in range(4):
        reference_file = reference_dir / f"fusion_seed0_model{k}.csv.gz"
        matrix = DistanceMatrix.read_csv(reference_file)
        assert matrix.shape == (50, 910)  # the published reader kept only 909 columns
        np.testing.assert_array_equal(matrix.values, case["fusion_inputs_csv"][k])  # parsed as Python's float
        np.testing.assert_array_equal(matrix.gallery_ids, case["gallery_ids"])
        written = DistanceMatrix(case["fusion_inputs"][k], case["query_ids"], case["gallery_ids"]).write_csv(tmp_path / f"{k}.csv")
        with gzip.open(reference_file, "rb") as file:
            assert written.read_bytes() == file.read()  # byte for byte the published write_mat_csv


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("0,1,2\n5,1.0,2.0\n6,1.0\n", 3, "2 fields, expected 3"),
        ("0,1,2\n5,1.0,2.0,3.0\n6,1.0,2.0\n", 2, "4 fields, expected 3"),
        ("0,1,2\n5,1.0,2.0\n6,1.0,abc\n", 3, "column 3: expected a number, found 'abc'"),
        ("0,1,2\n5,1.0,2.0\n6,1.0,\n", 3, "expected a number, found ''"),
        ("0,1,2\n5,1.0,2.0\n5,1.0,2.0\n", 3, "query id 5 already appeared on line 2"),
        ("0,1,2\n5.5,1.0,2.0\n", 2, "expected an integer query id"),
        ("0,1,x\n5,1.0,2.0\n", 1, "expected an integer gallery id, found 'x'"),
        ("0,1,2\n", None, "no query rows"),
        ("", 1, "found an empty line"),
    ],
)
def test_malformed_files_are_rejected_with_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(MatrixFileError) as error:
        DistanceMatrix.read_csv(path)
    message = str(error.value)
    assert str(path) in message and words in message
    if line is not None:
        assert f"line {line}" in message


def test_write_is_atomic_and_refuses_duplicate_query_ids(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    path = _matrix(rng).write_csv(tmp_path / "keep.csv")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="query id 1 appears more than once"):
        DistanceMatrix(np.zeros((2, 3)), [1, 1], [0, 1, 2]).write_csv(path)
    import reid.matrices as matrices

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matrices.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        _matrix(rng, m=5).write_csv(path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]  # no temporary file left


def test_constructor_checks_shapes_and_types():
    with pytest.raises(ValueError, match="3 query ids"):
        DistanceMatrix(np.zeros((2, 2)), [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="must be integers"):
        DistanceMatrix(np.zeros((1, 1)), [1.5], [1])
    matrix = DistanceMatrix(np.zeros((1, 2), np.float16), [1], [3, 4])
    assert matrix.values.dtype == np.float32 and matrix.query_ids.dtype == np.int64
    assert DistanceMatrix(np.zeros((1, 2)), [1], [3, 4]).values.dtype == np.float64


@pytest.mark.parametrize("cell", ["nan", "       nan", "inf", "  -inf", "NaN"])
def test_nan_and_infinite_cells_are_refused_with_line_and_column(tmp_path, cell):
    path = tmp_path / "m.csv"
    path.write_text(f"0,5,5,6\n1,   0.10000,   0.20000,   0.30000\n\n2,   0.40000,{cell},   0.60000\n3,nan,inf,0.1\n")
    with pytest.raises(MatrixFileError) as error:
        DistanceMatrix.read_csv(path)
    # the blank line 3 counts: the file's own line numbers
    assert str(error.value).startswith(f"{path}: line 4, column 3: the distance is {cell.strip()!r}, not a finite number (2 more such cells)")


def test_gzip_or_not_is_told_by_the_content_and_a_damaged_stream_names_the_file(tmp_path):
    matrix = DistanceMatrix(np.array([[0.5, 1.5]]), [4], [1, 2])
    plain_named_gz = tmp_path / "plain.csv.gz"
    plain_named_gz.write_bytes(matrix.write_csv(tmp_path / "p.csv").read_bytes())
    gzip_named_csv = tmp_path / "packed.csv"
    gzip_named_csv.write_bytes(matrix.write_csv(tmp_path / "p.csv.gz").read_bytes())
    for path in (plain_named_gz, gzip_named_csv):
        np.testing.assert_array_equal(DistanceMatrix.read_csv(path).values, matrix.values)
    rng = np.random.default_rng(5)
    full = _matrix(rng, m=40, n=300).write_csv(tmp_path / "big.csv.gz").read_bytes()
    for damaged, reason in ((full[: len(full) // 2], "ended before"), (full[:-8] + bytes(8), "CRC check failed")):
        path = tmp_path / "damaged.csv.gz"
        path.write_bytes(damaged)
        with pytest.raises(MatrixFileError, match=rf"^{path}: damaged gzip file \(.*({reason})"):
            DistanceMatrix.read_csv(path)
