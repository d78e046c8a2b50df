"""The built-in model: preprocessing (standardisation, one-hot categories) + a PyTorch MLP, and the MLflow
pyfunc that bundles both so that ``mlflow.pyfunc.load_model(uri).predict(df)`` takes the RAW feature columns
and returns class labels (classification) or values (regression).

The pyfunc is pickled by reference to this module: loading it needs ``mlops_operator`` importable (it is,
in the runtime image the model server runs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]
import torch
from mlflow.pyfunc.model import PythonModel
from torch import nn

from mlops_operator.drift.profile import category_key

from .data import FeatureKind, TableSchema, native

Task = Literal["classification", "regression"]
MAX_CATEGORIES = 100


@dataclass
class Preprocessor:
    """Turns raw feature columns into the MLP's input and the target into its training labels (and back)."""

    task: Task
    features: list[str]
    kinds: dict[str, FeatureKind]
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    classes: list[Any] = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        schema: TableSchema,
        task: Task,
        all_targets: pd.Series,
        max_categories: int = MAX_CATEGORIES,
    ) -> Preprocessor:
        """Statistics from the training rows; classes from every row, so held-out labels are encodable."""
        pre = cls(task=task, features=list(schema.features), kinds=dict(schema.kinds))
        for name in schema.features:
            column = train[name]
            if schema.kinds[name] == "numeric":
                values = column.to_numpy(dtype=np.float64)
                std = float(values.std())
                pre.means[name] = float(values.mean())
                pre.stds[name] = std if std > 1e-12 else 1.0
            else:
                counts = Counter(category_key(v) for v in column.tolist())
                ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
                pre.categories[name] = sorted(k for k, _ in ranked)
        if task == "classification":
            pre.classes = [native(v) for v in sorted(pd.unique(all_targets), key=_sort_key)]
        else:
            y = train[schema.target].to_numpy(dtype=np.float64)
            std = float(y.std())
            pre.target_mean = float(y.mean())
            pre.target_std = std if std > 1e-12 else 1.0
        return pre

    @property
    def input_dim(self) -> int:
        return sum(1 if self.kinds[f] == "numeric" else len(self.categories[f]) for f in self.features)

    @property
    def output_dim(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def transform(self, df: pd.DataFrame) -> npt.NDArray[np.float32]:
        """The MLP input of raw rows; a missing numeric value becomes the training mean, an unseen
        category all zeros."""
        blocks: list[npt.NDArray[np.float32]] = []
        for name in self.features:
            column = df[name]
            if self.kinds[name] == "numeric":
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
                z = (values - self.means[name]) / self.stds[name]
                blocks.append(np.nan_to_num(z, nan=0.0).astype(np.float32)[:, None])
            else:
                index = {c: i for i, c in enumerate(self.categories[name])}
                onehot = np.zeros((len(df), len(index)), dtype=np.float32)
                for row, value in enumerate(column.tolist()):
                    i = index.get(category_key(value))
                    if i is not None:
                        onehot[row, i] = 1.0
                blocks.append(onehot)
        if not blocks:
            return np.zeros((len(df), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1)

    def encode_target(self, values: pd.Series) -> npt.NDArray[Any]:
        if self.task == "classification":
            index = {category_key(c): i for i, c in enumerate(self.classes)}
            return np.asarray([index[category_key(v)] for v in values.tolist()], dtype=np.int64)
        y: npt.NDArray[np.float64] = values.to_numpy(dtype=np.float64)
        return ((y - self.target_mean) / self.target_std).astype(np.float32)

    def decode(self, outputs: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Class labels (argmax) or values (de-standardised) from the MLP's outputs."""
        if self.task == "classification":
            labels = np.asarray(self.classes, dtype=object)[outputs.argmax(axis=1)]
            return _tighten(labels, self.classes)
        return outputs.reshape(-1).astype(np.float64) * self.target_std + self.target_mean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(**data)


def _sort_key(value: Any) -> tuple[int, Any]:
    # numbers before strings, each in natural order
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def _tighten(labels: npt.NDArray[Any], classes: list[Any]) -> npt.NDArray[Any]:
    """Labels as a typed array when all classes share a simple type (int64, float64, bool, str)."""
    for kind, dtype in ((bool, np.bool_), (int, np.int64), (float, np.float64)):
        if classes and all(
            isinstance(c, kind) and (kind is bool or not isinstance(c, bool)) for c in classes
        ):
            return labels.astype(dtype)
    if classes and all(isinstance(c, str) for c in classes):
        return labels.astype(str)
    return labels


class MLP(nn.Module):
    """Fully connected network: Linear -> ReLU (-> Dropout) per hidden layer, then a Linear head."""

    def __init__(self, input_dim: int, hidden: list[int], output_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


@dataclass(frozen=True)
class Architecture:
    input_dim: int
    hidden: list[int]
    output_dim: int
    dropout: float = 0.0

    def build(self) -> MLP:
        return MLP(self.input_dim, list(self.hidden), self.output_dim, self.dropout)


def forward_numpy(net: nn.Module, x: npt.NDArray[np.float32], batch: int = 65536) -> npt.NDArray[np.float32]:
    """The network's outputs for ``x`` (CPU or the network's device), in eval mode, without gradients."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            outs.append(net(torch.from_numpy(x[start : start + batch]).to(device)).float().cpu().numpy())
    net.train(was_training)
    if not outs:
        return np.zeros((0, 1), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32)


class TabularPyfuncModel(PythonModel):
    """MLflow pyfunc of the built-in model: raw DataFrame in, labels/values out."""

    def __init__(
        self, preprocessor: Preprocessor, architecture: Architecture, state: dict[str, npt.NDArray[Any]]
    ) -> None:
        self.preprocessor = preprocessor.to_dict()
        self.architecture = asdict(architecture)
        self.state = state
        self._net: MLP | None = None

    @classmethod
    def from_module(
        cls, net: nn.Module, preprocessor: Preprocessor, architecture: Architecture
    ) -> TabularPyfuncModel:
        state = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        return cls(preprocessor, architecture, state)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_net"] = None
        return state

    def load_context(self, context: Any) -> None:
        self._net = None

    def network(self) -> MLP:
        if self._net is None:
            net = Architecture(**self.architecture).build()
            net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.state.items()})
            net.eval()
            self._net = net
        return self._net

    # model_input annotated as a DataFrame: MLflow then validates inputs with the signature, not type hints
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        pre = Preprocessor.from_dict(self.preprocessor)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        x = pre.transform(frame)
        return pre.decode(forward_numpy(self.network(), x))
