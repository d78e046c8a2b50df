"""Model quality metrics from predictions (numpy only), shared by the built-in trainer and the gate's
champion comparison so that both models are scored by the same code on the same rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def f1_macro(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Unweighted mean of the per-class F1 over the classes present in y_true or y_pred."""
    t, p = _labels(y_true, y_pred)
    if not t.size:
        return float("nan")
    scores = []
    for label in np.unique(np.concatenate([t, p])):
        tp = np.sum((t == label) & (p == label))
        fp = np.sum((t != label) & (p == label))
        fn = np.sum((t == label) & (p != label))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    t, p = _values(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2))) if t.size else float("nan")


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    t, p = _values(y_true, y_pred)
    return float(np.mean(np.abs(t - p))) if t.size else float("nan")


def r2(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    t, p = _values(y_true, y_pred)
    if not t.size:
        return float("nan")
    ss_res = float(np.sum((t - p) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot


def _labels(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    # compare as strings, so 1, 1.0 and "1" from different models/readers agree
    t = np.asarray([_label_key(v) for v in np.asarray(y_true, dtype=object).ravel()])
    p = np.asarray([_label_key(v) for v in np.asarray(y_pred, dtype=object).ravel()])
    if t.shape != p.shape:
        raise ValueError(f"{t.size} labels but {p.size} predictions")
    return t, p


def _label_key(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def _values(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} targets but {p.size} predictions")
    return t, p


#: Metrics computable from predictions alone, by name (without a val_/test_ prefix).
PREDICTION_METRICS: Final[dict[str, Callable[[ArrayLike, ArrayLike], float]]] = {
    "accuracy": accuracy,
    "f1": f1_macro,
    "rmse": rmse,
    "mae": mae,
    "r2": r2,
}
CLASSIFICATION_METRICS: Final = ("accuracy", "f1")
REGRESSION_METRICS: Final = ("rmse", "mae", "r2")


def classification_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    return {name: PREDICTION_METRICS[name](y_true, y_pred) for name in CLASSIFICATION_METRICS}


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    return {name: PREDICTION_METRICS[name](y_true, y_pred) for name in REGRESSION_METRICS}
