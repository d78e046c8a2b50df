"""Pure parts of the trainer runtime: termination messages, digests, splits, table checks, metrics, the gate,
configuration from the environment, error classification and preprocessing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.common import GateSpec, MustBeat
from mlops_operator.api.v1alpha1.trainingjob import BuiltinTrainer, DatasetSpec, SplitSpec
from mlops_operator.mlflow_registry.errors import classify
from mlops_operator.runtime import metrics as m
from mlops_operator.runtime.config import DistEnv, TrainerConfig, check_early_stopping
from mlops_operator.runtime.data import check_table, sha256_bytes, sha256_file, split_indices
from mlops_operator.runtime.errors import (
    MAX_TERMINATION_MESSAGE_BYTES,
    ConfigError,
    DataError,
    parse_termination_message,
    termination_message,
    write_termination_message,
)
from mlops_operator.runtime.gate import Comparison, evaluate_gate, lookup_metric, metric_split

# --- termination message ---------------------------------------------------------------------------------


def test_termination_message_is_one_line_with_the_reason() -> None:
    line = termination_message(pc.ExitCode.DATA_ERROR, "column 'x'\n has  NaN\tvalues")
    assert line == "InvalidDataset: column 'x' has NaN values"
    for code, reason in pc.REASON_BY_EXIT_CODE.items():
        assert termination_message(code, "m") == f"{reason}: m"
        assert parse_termination_message(f"{reason}: m") == (code, "m")
    assert parse_termination_message("Something: else") is None
    assert parse_termination_message("no reason") is None


def test_termination_message_fits_kubernetes_limit() -> None:
    line = termination_message(pc.ExitCode.GATE_FAILED, "é" * 5000)
    assert len(line.encode()) <= MAX_TERMINATION_MESSAGE_BYTES and line.endswith("...")
    assert line.startswith("GateFailed: é")


def test_write_termination_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "termination-log"
    line = write_termination_message(pc.ExitCode.USER_CODE_FAILED, "boom\nbang", str(log))
    assert log.read_text() == line == "UserCodeFailed: boom bang"
    assert line in capsys.readouterr().err
    # an unwritable location (outside a pod) only goes to stderr
    write_termination_message(pc.ExitCode.UNEXPECTED, "x", str(tmp_path / "missing" / "dir" / "log"))


# --- digests and splits ----------------------------------------------------------------------------------


def test_digests(tmp_path: Path) -> None:
    assert sha256_bytes(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path) == sha256_bytes(data)


def test_split_is_deterministic_disjoint_and_complete() -> None:
    split = SplitSpec(validation=0.2, test=0.1, seed=11)
    a, b = split_indices(103, split), split_indices(103, split)
    for part in ("train", "validation", "test"):
        assert np.array_equal(a.of(part), b.of(part))  # type: ignore[arg-type]
    assert (a.test.size, a.validation.size, a.train.size) == (10, 21, 72)
    together = np.concatenate([a.train, a.validation, a.test])
    assert sorted(together.tolist()) == list(range(103))
    other = split_indices(103, SplitSpec(validation=0.2, test=0.1, seed=12))
    assert not np.array_equal(a.test, other.test)


def test_split_edge_cases() -> None:
    none_held_out = split_indices(5, SplitSpec(validation=0, test=0))
    assert none_held_out.train.tolist() == [0, 1, 2, 3, 4] and none_held_out.test.size == 0
    tiny = split_indices(3, SplitSpec(validation=0.1, test=0.1))
    assert (tiny.train.size, tiny.validation.size, tiny.test.size) == (1, 1, 1)
    with pytest.raises(DataError, match="too few"):
        split_indices(2, SplitSpec(validation=0.1, test=0.1))


# --- table checks ----------------------------------------------------------------------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [1.0, 2.0, 3.0, 4.0] * 5,
            "b": [1, 2, 3, 4] * 5,
            "c": ["x", "y", "x", "z"] * 5,
            "flag": [True, False] * 10,
            "label": ["p", "q"] * 10,
        }
    )


def _ds(**kw: Any) -> DatasetSpec:
    return DatasetSpec.model_validate({"uri": "/d.csv", "target": "label", **kw})


def test_check_table_kinds_and_features() -> None:
    schema = check_table(_frame(), _ds(), "classification")
    assert schema.features == ["a", "b", "c", "flag"]
    assert schema.kinds == {"a": "numeric", "b": "numeric", "c": "categorical", "flag": "categorical"}
    assert check_table(_frame(), _ds(features=["c", "a"]), "classification").features == ["c", "a"]
    assert check_table(_frame(), _ds(), None).kinds == {}


@pytest.mark.parametrize(
    ("change", "task", "message"),
    [
        (lambda f: f.drop(columns=["label"]), "classification", "target column 'label' is not in dataset"),
        (
            lambda f: f.assign(a=[np.nan] + [1.0] * 19),
            "classification",
            "feature column 'a' has 1 missing value",
        ),
        (lambda f: f.assign(a=[np.inf] + [1.0] * 19), "classification", "infinite"),
        (
            lambda f: f.assign(label=[None] + ["p"] * 19),
            "classification",
            "target column 'label' has 1 missing",
        ),
        (lambda f: f.assign(label="p"), "classification", "has 1 class(es)"),
        (lambda f: f.assign(label=[0.5, 1.0] * 10), "classification", "fractional"),
        (lambda f: f, "regression", "must be numeric for regression"),
        (lambda f: f.assign(b=["1"] * 19 + ["oops"]), "classification", "numeric except for 1 value(s)"),
        (lambda f: f.assign(d=pd.Timestamp("2020-01-01")), "classification", "convert dates"),
        (lambda f: f.iloc[0:0], "classification", "has no rows"),
    ],
)
def test_check_table_rejects(change: Any, task: Any, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_table(change(_frame()), _ds(), task)


def test_check_table_missing_feature_and_duplicates() -> None:
    with pytest.raises(DataError, match=r"feature column\(s\) \['zz'\]"):
        check_table(_frame(), _ds(features=["a", "zz"]), "classification")
    dup = _frame()
    dup.columns = ["a", "a", "c", "flag", "label"]
    with pytest.raises(DataError, match="duplicate column"):
        check_table(dup, _ds(), "classification")


# --- metrics ---------------------------------------------------------------------------------------------


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert m.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))
    assert m.f1_macro(t, p) == pytest.approx(skm.f1_score(t, p, average="macro"))
    assert m.accuracy([1, 2], [1.0, "2"]) == 1.0  # labels compare as strings
    yt, yp = rng.normal(size=100), rng.normal(size=100)
    assert m.rmse(yt, yp) == pytest.approx(np.sqrt(skm.mean_squared_error(yt, yp)))
    assert m.mae(yt, yp) == pytest.approx(skm.mean_absolute_error(yt, yp))
    assert m.r2(yt, yp) == pytest.approx(skm.r2_score(yt, yp))
    assert np.isnan(m.accuracy([], []))
    with pytest.raises(ValueError, match="predictions"):
        m.rmse([1.0], [1.0, 2.0])


# --- gate ------------------------------------------------------------------------------------------------


def test_metric_names_follow_the_split_prefix() -> None:
    assert metric_split("test_accuracy", has_test=True) == ("test", "accuracy")
    assert metric_split("val_rmse", has_test=True) == ("validation", "rmse")
    assert metric_split("accuracy", has_test=True) == ("test", "accuracy")
    assert metric_split("accuracy", has_test=False) == ("validation", "accuracy")
    metrics = {"test_accuracy": 0.9, "val_accuracy": 0.8, "loss": 0.1}
    assert lookup_metric("accuracy", metrics, has_test=True) == 0.9
    assert lookup_metric("accuracy", metrics, has_test=False) == 0.8
    assert lookup_metric("loss", metrics, has_test=True) == 0.1
    assert lookup_metric("test_f1", metrics, has_test=True) is None


def test_gate_thresholds() -> None:
    gate = GateSpec.model_validate(
        {
            "metrics": [
                {"name": "test_accuracy", "threshold": 0.9},
                {"name": "val_loss", "op": "<", "threshold": 0.5},
            ]
        }
    )
    ok = evaluate_gate(gate, {"test_accuracy": 0.95, "val_loss": 0.2}, has_test=True)
    assert ok.passed and ok.message == "test_accuracy 0.95 >= 0.9; val_loss 0.2 < 0.5"
    bad = evaluate_gate(gate, {"test_accuracy": 0.8512345, "val_loss": 0.2}, has_test=True)
    assert not bad.passed and bad.message == "test_accuracy 0.8512 does not meet >= 0.9"
    assert [r.passed for r in bad.results] == [False, True] and bad.results[0].value == 0.8512345
    missing = evaluate_gate(gate, {"val_loss": float("nan")}, has_test=True)
    assert not missing.passed
    assert (
        missing.message
        == "test_accuracy was not logged (required >= 0.9); val_loss was not logged (required < 0.5)"
    )
    assert evaluate_gate(None, {}, has_test=False).passed


def test_gate_must_beat() -> None:
    gate = GateSpec.model_validate({"mustBeat": {"metric": "test_accuracy", "margin": 0.02}})
    assert gate.must_beat is not None
    rule = gate.must_beat
    first = evaluate_gate(gate, {}, has_test=True, comparison=Comparison(rule, None, 0.5, None))
    assert first.passed and "no version holds alias champion yet" in first.message
    beats = evaluate_gate(gate, {}, has_test=True, comparison=Comparison(rule, 3, 0.93, 0.91))
    assert beats.passed and beats.incumbent_version == 3 and beats.incumbent_value == 0.91
    assert beats.message == "test_accuracy 0.93 beats champion v3 (0.91) by margin 0.02"
    loses = evaluate_gate(gate, {}, has_test=True, comparison=Comparison(rule, 3, 0.92, 0.91))
    assert (
        not loses.passed
        and loses.message == "test_accuracy 0.92 does not beat champion v3 (0.91) by margin 0.02"
    )
    lower = MustBeat(metric="test_rmse", direction="minimize", margin=0.1)
    assert Comparison(lower, 1, 0.8, 1.0).passed and not Comparison(lower, 1, 0.95, 1.0).passed
    with pytest.raises(ValueError, match="comparison"):
        evaluate_gate(gate, {}, has_test=True)


# --- configuration from the environment ------------------------------------------------------------------

SPEC = {
    "model": {"name": "iris"},
    "dataset": {"uri": "pvc://data/iris.csv", "target": "species"},
    "trainer": {"builtin": {"task": "classification"}},
    "runPolicy": {"checkpoint": {"uri": "pvc://ckpt/iris", "everyEpochs": 3}},
    "mlflow": {"trackingUri": "http://mlflow:5000", "experiment": "exp"},
}


def _env(**extra: str) -> dict[str, str]:
    return {pc.ENV_TRAININGJOB_SPEC: json.dumps(SPEC), pc.ENV_TRAININGJOB_UID: "u-1", **extra}


def test_config_from_env() -> None:
    cfg = TrainerConfig.from_env(_env(**{pc.ENV_POD_NAME: "iris-0-abc"}))
    assert cfg.tracking_uri == "http://mlflow:5000" and cfg.experiment == "exp"
    assert cfg.attempt == "iris-0-abc" and cfg.uid == "u-1"
    assert cfg.checkpoint_dir == "/mnt/pvc/ckpt/iris/u-1" and cfg.checkpoint_every == 3 and cfg.checkpointing
    assert cfg.termination_log == pc.DEFAULT_TERMINATION_LOG
    assert not cfg.dist.under_torchrun and not cfg.dist.needs_launcher and cfg.dist.is_main
    override = TrainerConfig.from_env(
        _env(
            **{
                pc.ENV_MLFLOW_TRACKING_URI: "http://other:5000",
                pc.ENV_MLFLOW_EXPERIMENT_NAME: "e2",
                pc.ENV_CHECKPOINT_DIR: "/tmp/checkpoints",
            }
        )
    )
    assert (override.tracking_uri, override.experiment) == ("http://other:5000", "e2")
    assert override.checkpoint_dir == "/tmp/checkpoints/u-1"
    no_spec = {**SPEC, "runPolicy": {}}
    plain = TrainerConfig.from_env(
        {pc.ENV_TRAININGJOB_SPEC: json.dumps(no_spec), pc.ENV_CHECKPOINT_DIR: "/tmp/checkpoints"}
    )
    assert plain.checkpoint_dir == "/tmp/checkpoints/default" and not plain.checkpointing


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MLOPS_TRAININGJOB_SPEC is not set"),
        ({pc.ENV_TRAININGJOB_SPEC: "{"}, "is not JSON"),
        (
            {pc.ENV_TRAININGJOB_SPEC: json.dumps({"model": {"name": "x"}})},
            "invalid TrainingJob spec: dataset",
        ),
        ({pc.ENV_TRAININGJOB_SPEC: json.dumps({**SPEC, "mlflow": None})}, "no MLflow tracking server"),
        ({**_env(), pc.ENV_NNODES: "two"}, "NNODES='two' is not an integer"),
    ],
)
def test_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig.from_env(env)


def test_dist_env() -> None:
    worker = DistEnv.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert worker.under_torchrun and not worker.is_main and not worker.writes_termination_log
    assert DistEnv.from_env({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}).is_main
    assert DistEnv.from_env({pc.ENV_NPROC_PER_NODE: "2"}).needs_launcher
    assert DistEnv.from_env({pc.ENV_NNODES: "2", pc.ENV_NODE_RANK: "1"}).is_main is False
    assert not DistEnv.from_env({"WORLD_SIZE": "1"}).needs_launcher


def test_early_stopping_checks() -> None:
    b = BuiltinTrainer.model_validate({"task": "regression", "earlyStopping": {"metric": "val_accuracy"}})
    with pytest.raises(ConfigError, match="not logged for regression"):
        check_early_stopping(b, True, "regression")
    with pytest.raises(ConfigError, match="needs validation rows"):
        check_early_stopping(b, False, "regression")
    loss = BuiltinTrainer.model_validate({"task": "regression", "earlyStopping": {"metric": "loss"}})
    with pytest.raises(ConfigError, match="must be a validation metric"):
        check_early_stopping(loss, True, "regression")
    check_early_stopping(BuiltinTrainer.model_validate({"task": "regression"}), False, "regression")


# --- MLflow error classification -------------------------------------------------------------------------


class FakeMlflowError(Exception):
    def __init__(self, code: str | None) -> None:
        super().__init__(code or "")
        self.error_code = code


def test_mlflow_error_classification() -> None:
    assert classify(FakeMlflowError("INTERNAL_ERROR")) == "unavailable"
    assert classify(FakeMlflowError("TEMPORARILY_UNAVAILABLE")) == "unavailable"
    assert classify(FakeMlflowError("UNAUTHENTICATED")) == "auth"
    assert classify(FakeMlflowError("RESOURCE_DOES_NOT_EXIST")) == "not_found"
    assert classify(FakeMlflowError("INVALID_PARAMETER_VALUE")) == "client"
    assert classify(ConnectionRefusedError()) == "unavailable"
    assert classify(ValueError("x")) == "client"


# --- preprocessing (torch) -------------------------------------------------------------------------------


def test_preprocessor_standardises_and_encodes() -> None:
    from mlops_operator.runtime.data import TableSchema
    from mlops_operator.runtime.tabular_model import Preprocessor

    frame = pd.DataFrame({"x": [0.0, 2.0, 4.0], "c": ["a", "b", "a"], "y": [2, 1, 2]})
    schema = TableSchema(target="y", features=["x", "c"], kinds={"x": "numeric", "c": "categorical"})
    pre = Preprocessor.fit(frame, schema, "classification", frame["y"])
    assert pre.classes == [1, 2] and pre.input_dim == 3 and pre.output_dim == 2
    x = pre.transform(pd.DataFrame({"x": [2.0, np.nan], "c": ["b", "unseen"]}))
    assert x.tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert pre.encode_target(frame["y"]).tolist() == [1, 0, 1]
    labels = pre.decode(np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32))
    assert labels.tolist() == [2, 1] and labels.dtype == np.int64
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre

    reg = Preprocessor.fit(frame, schema, "regression", frame["y"])
    encoded = reg.encode_target(frame["y"])
    assert reg.decode(encoded.reshape(-1, 1)) == pytest.approx([2.0, 1.0, 2.0])


# --- storage: dataset fetch and checkpoints (local and fsspec) --------------------------------------------


def test_fetch_local_and_fsspec(tmp_path: Path) -> None:
    import fsspec

    from mlops_operator.runtime.data import fetch

    data = b"a,b\n1,2\n"
    path = tmp_path / "d.csv"
    path.write_bytes(data)
    for uri in (str(path), f"file://{path}"):
        fetched = fetch(uri, tmp_path / "scratch")
        assert fetched.path == path and fetched.digest == sha256_bytes(data) and fetched.size == len(data)
    with fsspec.open("memory://bucket/d.csv", "wb") as f:
        f.write(data)
    remote = fetch("memory://bucket/d.csv", tmp_path / "scratch")
    assert remote.path.parent == tmp_path / "scratch" and remote.path.read_bytes() == data
    assert remote.digest == sha256_bytes(data)
    with pytest.raises(DataError, match="does not exist"):
        fetch(str(tmp_path / "missing.csv"), tmp_path)
    with pytest.raises(DataError, match=r"cannot read dataset memory://bucket/nope\.csv"):
        fetch("memory://bucket/nope.csv", tmp_path / "scratch")


@pytest.mark.parametrize("remote", [False, True])
def test_checkpoint_store(tmp_path: Path, remote: bool) -> None:
    import torch

    from mlops_operator.runtime.checkpoint import CheckpointStore

    location = f"memory://ckpt-{tmp_path.name}/job" if remote else str(tmp_path / "job")
    store = CheckpointStore(location, keep=2)
    assert store.epochs() == [] and store.latest("fp") is None
    for epoch in (1, 2, 3):
        store.save(epoch, {"fingerprint": "fp", "model": {"w": torch.full((2,), float(epoch))}})
    assert store.epochs() == [3, 2]  # older ones pruned
    latest = store.latest("fp")
    assert latest is not None and latest["epoch"] == 3 and latest["model"]["w"].tolist() == [3.0, 3.0]
    assert store.latest("other-config") is None
    store.clear()
    assert store.epochs() == []
