"""Loading the pinned model version from MLflow, and predicting.

Every model is served through MLflow's pyfunc (``mlflow.pyfunc.load_model``): the *generic path* builds the
DataFrame (or arrays) the pyfunc expects and calls ``predict``, so answers equal what
``mlflow.pyfunc.load_model(uri).predict`` returns. For two common torch models a *fast path* skips pandas
and MLflow's per-call schema enforcement (the server has already validated the input with numpy):

- the built-in trainer's :class:`~mlops_operator.runtime.tabular_model.TabularPyfuncModel` (standardise /
  one-hot with numpy, the MLP under ``torch.inference_mode``, the same decoding);
- ``mlflow.pytorch`` models (the columns as one float32 matrix, as MLflow's wrapper does).

A fast path is used only after it reproduced the generic path's outputs exactly on the input example and on
rows drawn from the reference profile; otherwise the server logs why and stays on the generic path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mlops_operator.api.v1alpha1.pod_contract import PROFILE_ARTIFACT
from mlops_operator.drift.profile import (
    CategoricalFeatureProfile,
    NumericFeatureProfile,
    ProfileError,
    ReferenceProfile,
    load_profile,
)
from mlops_operator.runtime.errors import ConfigError

from . import jsonio
from .config import ServerConfig
from .errors import ModelError, RequestError
from .outputs import DEFAULT_OUTPUT_NAME, Outputs, normalize
from .payload import Batch, parse_invocations
from .schema import InputSchema, OutputSpec, from_mlflow, outputs_from_mlflow

log = logging.getLogger(__name__)

Predictor = Callable[[Batch], Outputs]
#: MLflow error codes of its own input enforcement: the request is at fault (400), not the model.
_MLFLOW_INPUT_ERRORS: Final = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST"})
VERIFY_ROWS: Final = 32


@dataclass(frozen=True)
class Cost:
    """Measured prediction time: ``fixed_s + per_row_s * rows``."""

    fixed_s: float = 0.0
    per_row_s: float = 0.0

    def estimate(self, rows: int) -> float:
        return self.fixed_s + self.per_row_s * max(rows - 1, 0)


@dataclass
class LoadedModel:
    name: str
    version: str
    uri: str
    schema: InputSchema
    predictor: Predictor
    path: str
    """Which prediction path serves requests: ``pyfunc``, ``tabular-fast`` or ``torch-fast``."""
    output_specs: list[OutputSpec] = field(default_factory=list)
    profile: ReferenceProfile | None = None
    run_id: str | None = None
    flavors: list[str] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)
    sample_output: Outputs | None = None
    load_seconds: float = 0.0

    def predict(self, batch: Batch) -> Outputs:
        """Predictions for a validated batch; :class:`ModelError` when the model fails (500),
        :class:`RequestError` when MLflow's own input enforcement refuses the input (400)."""
        try:
            return self.predictor(batch)
        except RequestError:
            raise
        except Exception as error:
            raise _classify_predict_error(error) from error


def _classify_predict_error(error: Exception) -> Exception:
    code = getattr(error, "error_code", None)
    text = " ".join(str(error).split())[:2000] or type(error).__name__
    if isinstance(code, str) and code in _MLFLOW_INPUT_ERRORS:
        return RequestError(f"the model refused the input: {text}")
    return ModelError(f"the model failed: {type(error).__name__}: {text}")


# --------------------------------------------------------------------------------------------------------
# prediction paths
# --------------------------------------------------------------------------------------------------------


def generic_predictor(pyfunc: Any, schema: InputSchema, output_name: str) -> Predictor:
    """``pyfunc.predict`` on a DataFrame of the validated columns (or the arrays of a tensor schema)."""
    import pandas as pd  # type: ignore[import-untyped]

    single_tensor = schema.is_tensor and len(schema.tensors) == 1 and schema.tensors[0].name is None

    def predict(batch: Batch) -> Outputs:
        data: Any
        if schema.is_tensor:
            data = batch.tensors[""] if single_tensor else dict(batch.tensors)
        else:
            data = pd.DataFrame(batch.columns)
        result = pyfunc.predict(data, params=batch.params) if batch.params else pyfunc.predict(data)
        return normalize(result, output_name)

    return predict


def tabular_predictor(pyfunc: Any, schema: InputSchema, output_name: str) -> Predictor | None:
    """Fast path of the built-in TabularPyfuncModel, or None when the model is not one (or uses features
    this path does not reproduce: optional categorical columns)."""
    try:
        from mlops_operator.runtime.tabular_model import Preprocessor, TabularPyfuncModel
    except ImportError:  # pragma: no cover - the runtime image has it
        return None
    try:
        python_model = pyfunc.unwrap_python_model()
    except Exception:
        return None
    if not isinstance(python_model, TabularPyfuncModel) or schema.is_tensor:
        return None
    import torch

    pre = Preprocessor.from_dict(python_model.preprocessor)
    net = python_model.network()
    features = list(pre.features)
    if any(f not in schema.by_name for f in features):
        return None
    if any(pre.kinds[f] != "numeric" and not schema.by_name[f].required for f in features):
        return None
    all_numeric = all(pre.kinds[f] == "numeric" for f in features)
    schema_index = [schema.names.index(f) for f in features]
    matrix_cols: Any = slice(None) if schema_index == list(range(len(schema.names))) else schema_index
    forward = sequential_forward(getattr(net, "net", None)) if type(net).__name__ == "MLP" else None
    forward = forward or net
    classes = list(pre.classes)
    int_classes = (
        pre.task == "classification"
        and bool(classes)
        and all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    )
    class_array = np.asarray(classes, dtype=np.int64) if int_classes else None
    means = np.asarray([pre.means.get(f, 0.0) for f in features], dtype=np.float64)
    stds = np.asarray([pre.stds.get(f, 1.0) for f in features], dtype=np.float64)
    onehot_index = {f: {c: i for i, c in enumerate(pre.categories.get(f, []))} for f in features}
    from mlops_operator.drift.profile import category_key

    def encode(batch: Batch) -> npt.NDArray[np.float32]:
        if all_numeric:
            if batch.matrix is not None:
                x = batch.matrix[:, matrix_cols]
            else:
                x = np.column_stack([batch.columns[f] for f in features]).astype(np.float64, copy=False)
            z = (x - means) / stds
            if not np.isfinite(z).all():
                z = np.nan_to_num(z, nan=0.0)
            return z.astype(np.float32)
        blocks = []
        for j, f in enumerate(features):
            column = batch.columns[f]
            if pre.kinds[f] == "numeric":
                z = (column.astype(np.float64) - means[j]) / stds[j]
                blocks.append(np.nan_to_num(z, nan=0.0).astype(np.float32)[:, None])
            else:
                index = onehot_index[f]
                onehot = np.zeros((batch.rows, len(index)), dtype=np.float32)
                for row, value in enumerate(column.tolist()):
                    i = index.get(category_key(value))
                    if i is not None:
                        onehot[row, i] = 1.0
                blocks.append(onehot)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((batch.rows, 0), dtype=np.float32)

    def predict(batch: Batch) -> Outputs:
        x = encode(batch)
        with torch.inference_mode():
            out = forward(torch.from_numpy(x)).float().numpy()
        if class_array is not None:
            return Outputs({output_name: class_array[out.argmax(axis=1)]}, "array")
        return Outputs({output_name: pre.decode(out)}, "array")

    return predict


def torch_predictor(pyfunc: Any, schema: InputSchema, output_name: str) -> Predictor | None:
    """Fast path of an ``mlflow.pytorch`` model on CPU, or None."""
    impl: Any = getattr(pyfunc, "_model_impl", None)
    if (
        impl is None
        or type(impl).__name__ != "_PyTorchWrapper"
        or getattr(impl, "_is_forecasting_model", True)
    ):
        return None
    if str(getattr(impl, "device", "cpu")) != "cpu":
        return None
    if schema.is_tensor and not (len(schema.tensors) == 1 and schema.tensors[0].name is None):
        return None
    if not schema.is_tensor and not all(c.is_numeric and c.required for c in schema.columns):
        return None
    import torch

    module = impl.pytorch_model
    forward = sequential_forward(module) or module
    names = schema.names

    def predict(batch: Batch) -> Outputs:
        if schema.is_tensor:
            x = batch.tensors[""]
        elif batch.matrix is not None:
            x = batch.matrix.astype(np.float32)
        else:
            x = np.column_stack([batch.columns[n] for n in names]).astype(np.float32)
        with torch.inference_mode():
            preds = forward(torch.from_numpy(x))
        if not isinstance(preds, torch.Tensor):
            raise TypeError(f"Expected PyTorch model to output a single output tensor, got {type(preds)}")
        out = preds.numpy()
        if schema.is_tensor:
            return Outputs({output_name: out}, "array")
        matrix = out.reshape(out.shape[0], -1) if out.ndim != 2 else out
        if out.ndim > 2:
            raise TypeError(f"the model returned a {out.ndim}-D tensor")
        return Outputs({str(i): matrix[:, i] for i in range(matrix.shape[1])}, "frame")

    return predict


def sequential_forward(module: Any) -> Callable[[Any], Any] | None:
    """A forward function for an ``nn.Sequential`` of Linear and element-wise activations (eval-mode
    Dropout and Identity skipped) that calls the same torch ops without the per-module ``__call__``
    machinery (hooks, etc.): a few microseconds per layer. None for anything else (or with hooks)."""
    import torch
    from torch import nn

    if type(module) is not nn.Sequential or module.training:
        return None
    if module._forward_hooks or module._forward_pre_hooks:
        return None
    steps: list[Callable[[Any], Any]] = []
    linear = torch.nn.functional.linear
    for layer in module:
        if layer._forward_hooks or layer._forward_pre_hooks:
            return None
        kind = type(layer)
        if kind is nn.Linear:
            steps.append(_linear_step(linear, layer.weight, layer.bias))
        elif kind is nn.ReLU:
            steps.append(torch.relu)
        elif kind is nn.Tanh:
            steps.append(torch.tanh)
        elif kind is nn.Sigmoid:
            steps.append(torch.sigmoid)
        elif kind in (nn.Dropout, nn.Identity):
            continue
        else:
            return None

    def forward(x: Any) -> Any:
        for step in steps:
            x = step(x)
        return x

    return forward


def _linear_step(linear: Callable[..., Any], weight: Any, bias: Any) -> Callable[[Any], Any]:
    def step(x: Any) -> Any:
        return linear(x, weight, bias)

    return step


def outputs_equal(a: Outputs, b: Outputs) -> bool:
    if a.orient != b.orient or list(a.arrays) != list(b.arrays):
        return False
    for key, x in a.arrays.items():
        y = b.arrays[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


# --------------------------------------------------------------------------------------------------------
# synthetic rows, example, timing
# --------------------------------------------------------------------------------------------------------


def example_batch(example: Any, schema: InputSchema) -> Batch | None:
    """The model's input example as a validated batch (None when it does not fit the signature)."""
    if example is None:
        return None
    try:
        if hasattr(example, "to_json") and hasattr(example, "columns"):
            body: Any = {"dataframe_split": jsonio.loads(example.to_json(orient="split").encode())}
        elif isinstance(example, dict):
            body = {"inputs": {k: np.asarray(v).tolist() for k, v in example.items()}}
        else:
            body = {"inputs": np.asarray(example).tolist()}
        return parse_invocations(jsonio.loads(jsonio.dumps(body)), schema)
    except (RequestError, ValueError, TypeError) as error:
        log.warning(
            "the model's input example does not fit its signature (%s); warming up on synthetic rows", error
        )
        return None


def synthetic_batch(schema: InputSchema, profile: ReferenceProfile | None, rows: int, seed: int = 0) -> Batch:
    """Plausible rows: numeric features drawn from the profile's quantiles, categories from its list."""
    rng = np.random.default_rng(seed)
    if schema.is_tensor:
        tensors = {}
        for spec in schema.tensors:
            shape = tuple(rows if i == 0 else (d if d >= 0 else 1) for i, d in enumerate(spec.shape))
            dtype = spec.dtype if spec.dtype.kind in "biuf" else np.dtype(np.float32)
            tensors[spec.name or ""] = (
                rng.standard_normal(shape) if dtype.kind == "f" else np.zeros(shape)
            ).astype(dtype)
        return Batch(rows=rows, tensors=tensors)
    features: dict[str, Any] = {}
    if profile is not None:
        features = {f.name: f for f in profile.features}
    columns: dict[str, npt.NDArray[Any]] = {}
    for col in schema.columns:
        feature = features.get(col.name)
        if col.kind in ("float", "int"):
            if isinstance(feature, NumericFeatureProfile) and feature.count:
                values = rng.choice(np.asarray(feature.quantiles), size=rows)
            else:
                values = rng.standard_normal(rows)
            columns[col.name] = (np.round(values) if col.kind == "int" else values).astype(col.dtype)
        elif col.kind == "bool":
            columns[col.name] = rng.integers(0, 2, rows).astype(bool)
        elif col.kind == "str":
            cats = (
                feature.categories
                if isinstance(feature, CategoricalFeatureProfile) and feature.categories
                else ["a"]
            )
            out = np.empty(rows, dtype=object)
            out[:] = [cats[i] for i in rng.integers(0, len(cats), rows)]
            columns[col.name] = out
        elif col.kind == "datetime":
            columns[col.name] = np.full(rows, np.datetime64("2024-01-01T00:00:00"), dtype=col.dtype)
        else:
            out = np.empty(rows, dtype=object)
            out[:] = [b"" if col.kind == "bytes" else None] * rows
            columns[col.name] = out
    return Batch(rows=rows, columns=columns)


def tile(batch: Batch, rows: int) -> Batch:
    """``batch`` repeated/cut to ``rows`` rows."""
    idx = np.arange(rows) % batch.rows
    return Batch(
        rows=rows,
        columns={k: v[idx] for k, v in batch.columns.items()},
        tensors={k: v[idx] for k, v in batch.tensors.items()},
        params=batch.params,
    )


def _time(predictor: Predictor, batch: Batch, budget_s: float = 0.3) -> float:
    """Median seconds per call (a few calls, bounded by ``budget_s``)."""
    start = time.perf_counter()
    predictor(batch)
    first = time.perf_counter() - start
    reps = int(min(15, max(1, budget_s / max(first, 1e-6))))
    samples = [first]
    for _ in range(reps):
        t0 = time.perf_counter()
        predictor(batch)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measure_cost(predictor: Predictor, batch: Batch, rows: int = 256) -> Cost:
    one = _time(predictor, tile(batch, 1))
    many = _time(predictor, tile(batch, rows))
    # a floor on the per-row cost keeps the estimate finite when noise hides it
    return Cost(fixed_s=one, per_row_s=max((many - one) / (rows - 1), 1e-8))


# --------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------


def configure_torch(threads: int) -> None:
    """Intra-op threads (1 for small models: no hand-off per request) and one inter-op thread."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set (or work already started)
        torch.set_num_interop_threads(1)


def choose_predictor(
    pyfunc: Any, schema: InputSchema, verify: list[Batch], output_name: str, allow_fast: bool
) -> tuple[Predictor, str]:
    generic = generic_predictor(pyfunc, schema, output_name)
    if not allow_fast:
        return generic, "pyfunc"
    for name, build in (("tabular-fast", tabular_predictor), ("torch-fast", torch_predictor)):
        try:
            fast = build(pyfunc, schema, output_name)
        except Exception as error:
            log.warning(
                "fast path %s unavailable (%s: %s); using pyfunc.predict", name, type(error).__name__, error
            )
            continue
        if fast is None:
            continue
        for batch in verify:
            try:
                same = outputs_equal(generic(batch), fast(batch))
            except Exception as error:
                log.warning(
                    "fast path %s failed on verification rows (%s); using pyfunc.predict", name, error
                )
                same = False
            if not same:
                log.warning(
                    "fast path %s does not reproduce pyfunc.predict exactly; using pyfunc.predict", name
                )
                break
        else:
            return fast, name
    return generic, "pyfunc"


def _download_profile(client: Any, run_id: str | None, dst: str) -> ReferenceProfile | None:
    if not run_id:
        log.warning("model version has no source run: serving without feature histograms")
        return None
    try:
        local = client.download_artifacts(run_id, PROFILE_ARTIFACT, dst)
        text = Path(local).read_text(encoding="utf-8")
    except Exception as error:
        log.warning(
            "run %s has no %s (%s): serving without feature histograms",
            run_id,
            PROFILE_ARTIFACT,
            " ".join(str(error).split())[:300],
        )
        return None
    try:
        return load_profile(text)
    except ProfileError as error:
        log.warning("ignoring the run's %s: %s", PROFILE_ARTIFACT, error)
        return None


def load(cfg: ServerConfig) -> LoadedModel:
    """Download and load ``cfg.model_uri`` and its run's reference profile, choose the prediction path,
    warm up and measure it. MLflow client errors propagate (the caller maps them to exit codes)."""
    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    import mlflow
    from mlflow import MlflowClient

    if cfg.tracking_uri:
        mlflow.set_tracking_uri(cfg.tracking_uri)
    configure_torch(cfg.torch_threads)
    client = MlflowClient()
    version = client.get_model_version(cfg.model_name, cfg.model_version)
    workdir = tempfile.mkdtemp(prefix="mlops-serve-")
    local = mlflow.artifacts.download_artifacts(artifact_uri=cfg.model_uri, dst_path=workdir)
    pyfunc = mlflow.pyfunc.load_model(local)
    meta = pyfunc.metadata
    example: Any = None
    try:
        example = meta.load_input_example(local)
    except Exception as error:
        log.warning("could not read the model's input example: %s", error)
    signature = meta.signature
    if signature is None:
        if example is None:
            raise ConfigError(
                f"{cfg.model_uri} has neither a signature nor an input example: "
                "the server cannot validate inputs"
            )
        from mlflow.models import infer_signature

        log.warning("%s has no signature: inferred one from its input example", cfg.model_uri)
        signature = infer_signature(example)
    try:
        schema = from_mlflow(signature.inputs, getattr(signature, "params", None))
    except ValueError as error:
        raise ConfigError(f"{cfg.model_uri}: unsupported signature: {error}") from error
    output_specs = outputs_from_mlflow(signature.outputs)
    output_name = output_specs[0].name if len(output_specs) == 1 else DEFAULT_OUTPUT_NAME
    profile = _download_profile(client, getattr(version, "run_id", None), workdir)

    warm = example_batch(example, schema) or synthetic_batch(schema, profile, 1)
    verify = [warm, synthetic_batch(schema, profile, VERIFY_ROWS, seed=1)]
    predictor, path = choose_predictor(pyfunc, schema, verify, output_name, cfg.predict_path == "auto")
    try:
        sample = predictor(warm)
        cost = measure_cost(predictor, warm)
    except Exception as error:
        raise ModelError(f"warm-up prediction failed: {type(error).__name__}: {error}") from error
    model = LoadedModel(
        name=cfg.model_name,
        version=cfg.model_version,
        uri=cfg.model_uri,
        schema=schema,
        predictor=predictor,
        path=path,
        output_specs=output_specs,
        profile=profile,
        run_id=getattr(version, "run_id", None),
        flavors=sorted(meta.flavors),
        cost=cost,
        sample_output=sample,
        load_seconds=time.perf_counter() - started,
    )
    log.info(
        "loaded %s (flavors %s, path %s, %s inputs%s) in %.1fs; predict %.0f us + %.1f us/row",
        cfg.model_uri,
        ", ".join(model.flavors),
        path,
        len(schema.tensors) if schema.is_tensor else len(schema.columns),
        ", reference profile" if profile is not None else ", no reference profile",
        model.load_seconds,
        cost.fixed_s * 1e6,
        cost.per_row_s * 1e6,
    )
    return model
