"""Datasets: fetch the bytes from a URI (recording their sha256), parse CSV/Parquet, check the columns the
spec names, and split the rows deterministically into train / validation / test."""

from __future__ import annotations

import hashlib
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.trainingjob import DatasetSpec, SplitSpec

from .errors import DataError, single_line

_CHUNK: Final = 1 << 20
HTTP_TIMEOUT_S: Final = 60.0

FeatureKind = Literal["numeric", "categorical"]
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class FetchedFile:
    """The dataset's bytes as a local file."""

    uri: str
    path: Path
    digest: str
    """``sha256:<hex>`` of the file's bytes."""
    size: int


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def sha256_bytes(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _copy_hashing(src: IO[bytes], dst: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: src.read(_CHUNK), b""):
        h.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def fetch(uri: str, scratch_dir: str | Path) -> FetchedFile:
    """The bytes behind ``uri`` as a local file: local paths (pvc:// mounted under /mnt/pvc, file://, absolute
    paths) are read in place; http(s) is downloaded; anything else (s3://, gs://, ...) goes through fsspec."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    try:
        if scheme in ("", "file", "pvc"):
            path = Path(pc.local_path(uri))
            if not path.is_file():
                raise DataError(f"cannot read dataset {uri}: {path} does not exist or is not a file")
            return FetchedFile(uri=uri, path=path, digest=sha256_file(path), size=path.stat().st_size)
        Path(scratch_dir).mkdir(parents=True, exist_ok=True)
        suffix = Path(urllib.parse.urlsplit(uri).path).suffix
        with tempfile.NamedTemporaryFile(
            dir=scratch_dir, prefix="dataset-", suffix=suffix, delete=False
        ) as out:
            if scheme in ("http", "https"):
                request = urllib.request.Request(uri, headers={"User-Agent": "mlops-operator-trainer"})  # noqa: S310
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
                    digest, size = _copy_hashing(response, out)
            else:
                digest, size = _fetch_fsspec(uri, out)
        return FetchedFile(uri=uri, path=Path(out.name), digest=digest, size=size)
    except DataError:
        raise
    except Exception as error:
        raise DataError(
            f"cannot read dataset {uri}: {single_line(str(error)) or type(error).__name__}"
        ) from error


def _fetch_fsspec(uri: str, out: IO[bytes]) -> tuple[str, int]:
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:
        raise DataError(
            f"cannot read dataset {uri}: reading this scheme needs fsspec, which is not installed"
        ) from None
    try:
        with fsspec.open(uri, "rb") as src:
            return _copy_hashing(src, out)
    except ImportError as error:  # e.g. s3fs/gcsfs missing for s3:// or gs://
        raise DataError(f"cannot read dataset {uri}: {error}") from None


def read_table(path: Path, fmt: Literal["csv", "parquet"], uri: str) -> pd.DataFrame:
    """Parse the file as CSV or Parquet."""
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as error:
        raise DataError(f"cannot parse dataset {uri} as {fmt}: {single_line(str(error))}") from error


# --------------------------------------------------------------------------------------------------------
# columns
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSchema:
    """The columns used, as the spec names them, and how each feature is treated."""

    target: str
    features: list[str]
    kinds: dict[str, FeatureKind]


def _first_rows(mask: npt.NDArray[np.bool_], limit: int = 3) -> str:
    rows = np.flatnonzero(mask)[:limit] + 1
    more = ", ..." if mask.sum() > limit else ""
    return ", ".join(str(r) for r in rows) + more


def _check_finite(df: pd.DataFrame, column: str, role: str) -> None:
    series = df[column]
    missing = series.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{role} column {column!r} has {int(missing.sum())} missing value(s) "
            f"(data rows {_first_rows(missing)}); fill or drop them"
        )
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        inf = ~np.isfinite(series.to_numpy(dtype=np.float64))
        if inf.any():
            raise DataError(f"{role} column {column!r} has infinite value(s) (data rows {_first_rows(inf)})")


def _kind(df: pd.DataFrame, column: str, role: str) -> FeatureKind:
    series = df[column]
    if pd.api.types.is_bool_dtype(series):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series):
        if pd.api.types.is_complex_dtype(series):
            raise DataError(f"{role} column {column!r} has complex numbers, which are not supported")
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        raise DataError(
            f"{role} column {column!r} has type {series.dtype}; convert dates to numbers before training"
        )
    # object/string/category: categorical, unless it is a numeric column with a few stray values
    values = series.astype("string")
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna().to_numpy()
    if bad.sum() > 0 and bad.mean() <= 0.1:
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{role} column {column!r} is numeric except for {int(bad.sum())} value(s) such as "
            f"{values.iloc[row]!r} (data row {row + 1}); fix the wrong type"
        )
    return "categorical"


def check_table(df: pd.DataFrame, spec: DatasetSpec, task: Task | None) -> TableSchema:
    """Check that the table has the columns the spec names, without missing values, with usable types.

    ``task`` None (user code) checks only that the columns exist.
    """
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"dataset {spec.uri} has duplicate column names {dup}")
    df.columns = pd.Index(columns)
    if spec.target not in df.columns:
        raise DataError(
            f"target column {spec.target!r} is not in dataset {spec.uri} (columns: {_list(columns)})"
        )
    features = list(spec.features) if spec.features else [c for c in columns if c != spec.target]
    absent = [f for f in features if f not in df.columns]
    if absent:
        raise DataError(
            f"feature column(s) {absent} are not in dataset {spec.uri} (columns: {_list(columns)})"
        )
    if not features:
        raise DataError(f"dataset {spec.uri} has no feature columns besides the target {spec.target!r}")
    if len(df) == 0:
        raise DataError(f"dataset {spec.uri} has no rows")
    if task is None:
        return TableSchema(target=spec.target, features=features, kinds={})

    kinds: dict[str, FeatureKind] = {}
    for column in features:
        _check_finite(df, column, "feature")
        kinds[column] = _kind(df, column, "feature")
    _check_finite(df, spec.target, "target")
    target = df[spec.target]
    if task == "regression":
        if pd.api.types.is_bool_dtype(target) or not pd.api.types.is_numeric_dtype(target):
            sample = target.iloc[0]
            raise DataError(
                f"target column {spec.target!r} must be numeric for regression, but has type {target.dtype} "
                f"(e.g. {sample!r})"
            )
    else:
        n_classes = target.nunique()
        if n_classes < 2:
            raise DataError(
                f"target column {spec.target!r} has {n_classes} class(es); classification needs >= 2"
            )
        if pd.api.types.is_float_dtype(target) and not np.all(np.mod(target.to_numpy(), 1) == 0):
            raise DataError(
                f"target column {spec.target!r} has fractional values; use task regression or class labels"
            )
    return TableSchema(target=spec.target, features=features, kinds=kinds)


def _list(columns: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


# --------------------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitIndices:
    """Row positions (sorted) of each part."""

    train: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]

    def of(self, part: Literal["train", "validation", "test"]) -> npt.NDArray[np.int64]:
        return {"train": self.train, "validation": self.validation, "test": self.test}[part]


def _part_size(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return max(1, round(n * fraction))


def split_indices(n: int, split: SplitSpec) -> SplitIndices:
    """Deterministic split of ``n`` rows: a seeded permutation, test first, then validation, the rest train.

    The same (n, fractions, seed) always gives the same rows; at least one row goes to each non-empty part.
    """
    n_test = _part_size(n, split.test)
    n_val = _part_size(n, split.validation)
    if n - n_test - n_val < 1:
        raise DataError(
            f"dataset has {n} row(s): too few for validation {split.validation} and test {split.test} "
            "with at least one training row"
        )
    order = np.random.default_rng(split.seed).permutation(n).astype(np.int64)
    test = np.sort(order[:n_test])
    val = np.sort(order[n_test : n_test + n_val])
    train = np.sort(order[n_test + n_val :])
    return SplitIndices(train=train, validation=val, test=test)


def dataset_name(uri: str) -> str:
    """A short name for the dataset: the last path component of its URI."""
    path = urllib.parse.urlsplit(uri).path or uri
    return Path(path).name or uri


def native(value: Any) -> Any:
    """A numpy scalar as the Python value (JSON-able)."""
    return value.item() if isinstance(value, np.generic) else value
