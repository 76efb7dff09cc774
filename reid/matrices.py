"""Distance matrices with their ids, and the challenge submission CSV they are saved as.

The submission format (the published ``write_mat_csv``): line 1 is ``0`` then the gallery ids,
comma-separated integers; then one line per query, ``<query id>,<value>,...`` with every value written
``%10.5f`` (width 10, five decimals, the value widened to float64 first), query ids ascending. For the
test split the ids are player ids (gallery ids repeat); for the challenge split they are file numbers.

Every matrix this project writes uses this format, and the reader uses every column (the published
reader's ``usecols=range(1, 910)`` silently dropped the last gallery column; that is not reproduced).

Any stage that combines matrices, or checks one against a split, says how the ids differ with
``id_mismatch`` (the one wording: which side has how many, the first differing position, the ids
found on one side only); ``check_aligned`` applies it to matrices to be fused.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from reid.errors import InputError
from reid.files import atomic_path

# Widths of "%10.5f": every value in (-999.99999, 9999.99999) is written in exactly 10 characters,
# which lets the writer build the text with array operations; other values take the slow path.
_FIELD_WIDTH = 10
_FAST_MIN, _FAST_MAX = -999.99999, 9999.99999
_GZIP_MAGIC = b"\x1f\x8b"


class MatrixFileError(InputError):
    """A distance CSV that does not follow the submission format (message: file, line, what was expected)."""


@dataclass
class DistanceMatrix:
    """A (num_query, num_gallery) distance matrix with the ids of its rows and columns.

    values: (m, n) distances, smaller = more similar. float32 by default; a float64 array is kept as
        float64 (the fusion scripts read CSVs as float64 so that their sums equal the published scripts'
        to the last bit). Anything else is converted to float32.
    query_ids: (m,) int64 ids of the rows (player ids on the test split, file numbers on the challenge).
    gallery_ids: (n,) int64 ids of the columns (may repeat).
    source: the file the matrix was read from, if any (named in error messages).
    """

    values: np.ndarray
    query_ids: np.ndarray
    gallery_ids: np.ndarray
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.dtype != np.float64:
            values = values.astype(np.float32, copy=False)
        if values.ndim != 2:
            raise ValueError(f"{self.name}: values must be 2-D (num_query, num_gallery), got shape {values.shape}")
        self.values = values
        self.query_ids = _as_ids(self.query_ids, "query_ids", self.name)
        self.gallery_ids = _as_ids(self.gallery_ids, "gallery_ids", self.name)
        if self.query_ids.shape[0] != values.shape[0] or self.gallery_ids.shape[0] != values.shape[1]:
            raise ValueError(
                f"{self.name}: values have shape {values.shape} but there are {len(self.query_ids)} query ids "
                f"and {len(self.gallery_ids)} gallery ids"
            )

    @property
    def name(self) -> str:
        """How error messages refer to this matrix: its file, or "matrix in memory"."""
        return self.source if self.source is not None else "matrix in memory"

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def with_values(self, values: np.ndarray) -> DistanceMatrix:
        """A matrix with these ids and other (m, n) values (e.g. a fusion's result)."""
        return DistanceMatrix(values, self.query_ids, self.gallery_ids)

    def sorted_by_query(self) -> DistanceMatrix:
        """The same matrix with its rows in ascending query id order (stable; no copy when already sorted)."""
        if np.all(self.query_ids[1:] >= self.query_ids[:-1]):
            return self
        order = np.argsort(self.query_ids, kind="stable")
        return DistanceMatrix(self.values[order], self.query_ids[order], self.gallery_ids, self.source)

    @classmethod
    def read_csv(cls, path: str | os.PathLike, dtype: type = np.float64) -> DistanceMatrix:
        """Read a submission CSV (gzip-compressed or not: told by its first bytes); every gallery column is kept.

        dtype: float64 (default) holds each ``%10.5f`` text exactly as Python's ``float`` parses it,
            which fusion needs to reproduce the published sums bit for bit; float32 halves the memory
            and gives the same rankings (it is what the published ``predict_fortestset.py`` used).
        Raises ``MatrixFileError`` naming the file and line for a ragged row, a non-numeric value, a
        NaN or infinite distance (with its column), a non-integer id, a duplicate query id, a file
        without query rows or a damaged gzip stream.
        """
        path = Path(path)
        header = _read_header(path)
        gallery_ids = _parse_id_fields(header[1:], path, line=1)
        try:
            with warnings.catch_warnings(), _open(path) as file:
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
                file.readline()
                table = np.loadtxt(file, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
        except ValueError as error:
            if isinstance(error, MatrixFileError):
                raise
            _raise_first_problem(path, len(header), fallback=str(error))
        if table.shape[0] == 0:
            raise MatrixFileError(f"{path}: no query rows after the header line")
        if table.shape[1] != len(header):
            _raise_first_problem(path, len(header), fallback=f"rows have {table.shape[1]} fields, the header {len(header)}")
        query_column = table[:, 0]
        if not np.all(np.isfinite(query_column) & (query_column == np.round(query_column))):
            _raise_first_problem(path, len(header), fallback="a query id is not an integer")
        finite = np.isfinite(table[:, 1:])
        if not finite.all():
            _raise_non_finite(path, finite)
        query_ids = query_column.astype(np.int64)
        unique, counts = np.unique(query_ids, return_counts=True)
        if np.any(counts > 1):
            duplicate = unique[np.argmax(counts > 1)]
            lines = [line for line, row in _data_lines(path) if _int_or_none(row.split(b",", 1)[0]) == duplicate]
            raise MatrixFileError(f"{path}: line {lines[1]}: query id {duplicate} already appeared on line {lines[0]}")
        return cls(table[:, 1:].astype(dtype, copy=False), query_ids, gallery_ids, source=str(path))

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write the submission CSV (rows sorted by query id) atomically: a temporary file, then ``os.replace``.

        A ``.gz`` suffix writes it gzip-compressed. Query ids must be unique (the reader rejects duplicates).
        Returns the path written.
        """
        path = Path(path)
        unique, counts = np.unique(self.query_ids, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"{self.name}: query id {unique[np.argmax(counts > 1)]} appears more than once; cannot write {path}")
        matrix = self.sorted_by_query()
        header = ",".join(["0", *map(str, matrix.gallery_ids.tolist())]) + "\n"
        rows_per_block = max(1, (1 << 20) // max(matrix.shape[1], 1))  # formatted in blocks: memory O(block)
        with atomic_path(path) as temporary, open(temporary, "wb") as raw, _maybe_gzip(raw, path) as file:
            file.write(header.encode())
            for start in range(0, matrix.shape[0], rows_per_block):
                block = slice(start, start + rows_per_block)
                file.write(format_rows(matrix.query_ids[block], matrix.values[block]))
        return path


def id_mismatch(what: str, found: np.ndarray, expected: np.ndarray, found_name: str, expected_name: str,
                expected_labels: np.ndarray | None = None) -> str | None:
    """How the ``found`` ids differ from the ``expected`` ones, in order; None when they are equal.

    what: ``query`` or ``gallery``; found_name / expected_name: how the text names each side (``the
    CSV``, ``matrix 1 (a.csv)``, ``the test split``); expected_labels: a name for each expected
    position (e.g. the image there), quoted at the first difference. The text has up to four parts
    joined by ``; ``: the two counts when they differ, the first differing position of the common
    prefix with both ids, the ids found only on one side, then only on the other (five of each at most).
    """
    found, expected = np.asarray(found), np.asarray(expected)
    if np.array_equal(found, expected):
        return None
    parts = []
    if len(found) != len(expected):
        parts.append(f"{what} ids: {found_name} has {len(found)}, {expected_name} has {len(expected)}")
    common = min(len(found), len(expected))
    differ = np.flatnonzero(found[:common] != expected[:common])
    if differ.size:
        at = int(differ[0])
        label = "" if expected_labels is None else f" ({expected_name}'s {what} image there: {expected_labels[at]})"
        parts.append(f"{what} ids differ first at {what} position {at} (0-based): {found[at]} vs {expected[at]}{label}")
    for side, ids, others in ((found_name, found, expected), (expected_name, expected, found)):
        only = np.setdiff1d(ids, others)
        if only.size:
            parts.append(f"ids only in {side}: {only[:5].tolist()}")
    return "; ".join(parts)


def check_aligned(matrices: Sequence[DistanceMatrix]) -> list[np.ndarray]:
    """The values of ``matrices`` once every one has the first one's query ids and gallery ids, in order
    (the fusion maths of ``reid.retrieval.fusion`` takes them). Otherwise ``InputError`` naming the
    matrix (its file when read from one) and how its ids differ (``id_mismatch``)."""
    if len(matrices) == 0:
        raise InputError("no matrices to fuse")
    for index, matrix in enumerate(matrices):
        if not isinstance(matrix, DistanceMatrix):
            raise TypeError(f"matrix {index + 1} is a {type(matrix).__name__}, expected a DistanceMatrix")
    first = matrices[0]
    for index, matrix in enumerate(matrices[1:], start=2):
        for what, ids, reference in (("query", matrix.query_ids, first.query_ids), ("gallery", matrix.gallery_ids, first.gallery_ids)):
            problem = id_mismatch(what, ids, reference, f"matrix {index}", "matrix 1")
            if problem:
                raise InputError(f"matrix {index} ({matrix.name}) does not match matrix 1 ({first.name}): {problem}")
    return [matrix.values for matrix in matrices]


def check_output_path(output: str | os.PathLike, inputs: list[str | os.PathLike], flag: str = "--output") -> None:
    """Raise ``InputError`` if ``output`` is one of ``inputs`` (the same file, by any path or link to it)."""
    target = Path(output).resolve()
    for source in inputs:
        if Path(source).resolve() == target or (target.exists() and Path(source).exists() and os.path.samefile(source, target)):
            raise InputError(f"{flag} {output} is also an input ({source}); writing it would replace that input: "
                             f"choose another {flag}")


def format_rows(row_ids: np.ndarray, values: np.ndarray) -> bytes:
    """Lines ``<id>,<%10.5f value>,...\\n`` for each row, byte-identical to Python's ``"%10.5f" % value``.

    row_ids: (m,) integers; values: (m, n) float (widened to float64 before formatting, as the
    published writer does). Rows whose values all lie in (-999.99999, 9999.99999) are formatted with
    array operations (exact decimal rounding, half-even on the binary value like printf); any other
    row (nan, inf, large values) goes through Python's formatting.
    """
    values = np.asarray(values, dtype=np.float64)
    m, n = values.shape
    prefixes = [f"{int(row_id)}," for row_id in np.asarray(row_ids).tolist()]
    if n == 0:
        return "".join(prefix[:-1] + "\n" for prefix in prefixes).encode()
    fast = np.all((values > _FAST_MIN) & (values < _FAST_MAX), axis=1)  # False for nan too
    text = _fixed_width_fields(values[fast]) if fast.any() else np.empty((0, n, _FIELD_WIDTH + 1), np.uint8)
    lines = []
    fast_row = 0
    for i in range(m):
        if fast[i]:
            lines.append(prefixes[i].encode() + text[fast_row].tobytes())
            fast_row += 1
        else:
            lines.append((prefixes[i] + ",".join("%10.5f" % v for v in values[i].tolist()) + "\n").encode())
    return b"".join(lines)


def _fixed_width_fields(values: np.ndarray) -> np.ndarray:
    """(r, n) float64 in the fast range -> (r, n, 11) uint8: each value as "%10.5f" then "," (last: "\\n")."""
    scaled = values * 1e5
    units = np.rint(scaled)
    # x * 1e5 carries a rounding error below 1e-6 here; where it lies that close to a half, the
    # product may have crossed the rounding boundary, so those few cells are rounded exactly.
    distance_to_half = scaled - np.floor(scaled)
    distance_to_half -= 0.5
    np.abs(distance_to_half, out=distance_to_half)
    for index in zip(*np.nonzero(distance_to_half < 1e-6)):
        units[index] = float(("%.5f" % values[index]).replace(".", ""))
    units = np.abs(units).astype(np.int32)  # < 1e9 in the fast range
    integer, fraction = np.divmod(units, 100_000)
    fields = np.empty(values.shape, dtype=[("integer", "S4"), ("point", "S1"), ("fraction", "S5"), ("end", "S1")])
    fields["integer"] = _integer_digits()[integer]
    fields["point"] = b"."
    fields["fraction"] = _fraction_digits()[fraction]
    fields["end"] = b","
    fields[:, -1]["end"] = b"\n"
    text = fields.view(np.uint8).reshape(values.shape + (_FIELD_WIDTH + 1,))
    rows, cols = np.nonzero(np.signbit(values))  # "-0.00000" for small negatives and -0.0, as printf writes them
    width = 1 + (integer[rows, cols] >= 10) + (integer[rows, cols] >= 100)  # negatives are > -1000
    text[rows, cols, 3 - width] = ord("-")
    return text


@functools.cache
def _integer_digits() -> np.ndarray:
    """(10000,) S4: the integer part 0..9999 right-aligned in 4 characters ("   0" .. "9999")."""
    return np.array([f"{i:4d}".encode() for i in range(10_000)], dtype="S4")


@functools.cache
def _fraction_digits() -> np.ndarray:
    """(100000,) S5: the five decimals "00000" .. "99999"."""
    return np.array([f"{i:05d}".encode() for i in range(100_000)], dtype="S5")


def _as_ids(ids, what: str, name: str) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"{name}: {what} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        as_int = array.astype(np.int64)
        if not np.array_equal(as_int, array):
            raise ValueError(f"{name}: {what} must be integers (the submission format writes them with %i)")
        array = as_int
    return array.astype(np.int64, copy=False)


@contextlib.contextmanager
def _maybe_gzip(raw, path: Path):
    """The open file itself, or a gzip stream into it when ``path`` ends in ``.gz`` (reproducible: mtime 0)."""
    if path.suffix != ".gz":
        yield raw
        return
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as compressed:
        yield compressed


@contextlib.contextmanager
def _open(path: Path):
    """The file's bytes, decompressed when it starts like a gzip stream (whatever its name says).

    A damaged gzip stream raises ``MatrixFileError`` naming the file."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        try:
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as file:
                    yield file
            else:
                yield raw
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise MatrixFileError(f"{path}: damaged gzip file ({error}); write or download it again") from None


def _read_header(path: Path) -> list[bytes]:
    with _open(path) as file:
        line = file.readline()
    if not line.strip():
        raise MatrixFileError(f"{path}: line 1: expected the header '0,<gallery id>,...', found an empty line")
    fields = line.rstrip(b"\r\n").split(b",")
    if len(fields) < 2:
        found = line.strip()[:40].decode(errors="replace")
        raise MatrixFileError(f"{path}: line 1: expected the header '0,<gallery id>,...', found {found!r} (not a distance CSV?)")
    return fields


def _data_lines(path: Path):
    """(line number, raw line) for each non-blank line after the header (numpy's reader skips blank lines too)."""
    with _open(path) as file:
        file.readline()
        for number, line in enumerate(file, start=2):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def _int_or_none(text: bytes) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if np.isfinite(value) and value == round(value) else None


def _parse_id_fields(fields: list[bytes], path: Path, line: int) -> np.ndarray:
    ids = []
    for column, text in enumerate(fields, start=2):
        value = _int_or_none(text)
        if value is None:
            raise MatrixFileError(f"{path}: line {line}, column {column}: expected an integer gallery id, found {text.decode(errors='replace')!r}")
        ids.append(value)
    return np.array(ids, dtype=np.int64)


def _raise_non_finite(path: Path, finite: np.ndarray) -> NoReturn:
    """``MatrixFileError`` for the first NaN or infinite value cell. finite: (rows, gallery) bool."""
    rows, columns = np.nonzero(~finite)
    row, column = int(rows[0]), int(columns[0]) + 2  # 1-based, after the query id column
    number, line = next(item for index, item in enumerate(_data_lines(path)) if index == row)
    text = line.split(b",")[column - 1].decode(errors="replace").strip()
    more = f" ({len(rows) - 1} more such cell{'s' if len(rows) > 2 else ''})" if len(rows) > 1 else ""
    raise MatrixFileError(f"{path}: line {number}, column {column}: the distance is {text!r}, not a finite number{more}; "
                          f"every cell must be a finite distance: recompute the matrix")


def _raise_first_problem(path: Path, num_fields: int, fallback: str) -> NoReturn:
    """Scan the data lines and raise ``MatrixFileError`` for the first one that breaks the format
    (with ``fallback`` as the message if no single line is to blame)."""
    for number, line in _data_lines(path):
        fields = line.split(b",")
        if len(fields) != num_fields:
            raise MatrixFileError(
                f"{path}: line {number}: {len(fields)} fields, expected {num_fields} "
                f"(a query id and one value per gallery id of the header line)"
            )
        if _int_or_none(fields[0]) is None:
            raise MatrixFileError(f"{path}: line {number}, column 1: expected an integer query id, found {fields[0].decode(errors='replace')!r}")
        for column, text in enumerate(fields[1:], start=2):
            try:
                float(text)
            except ValueError:
                raise MatrixFileError(f"{path}: line {number}, column {column}: expected a number, found {text.decode(errors='replace')!r}") from None
    raise MatrixFileError(f"{path}: {fallback}")
