"""The model server end to end: ``python -m mlops_operator.runtime.serve`` started as a subprocess exactly
like a ModelDeployment pod (configured only by the pod contract's environment), serving versions registered
in a real MLflow server (the session's ``mlflow_server``), answered over real HTTP.

Models (registered once per module): the built-in trainer's TabularPyfuncModel on four doubles (the
all-double fast path) and on mixed columns (doubles, a long, a string category), an ``mlflow.pytorch``
regressor without a reference profile, and a "quirky" pyfunc (models-from-code) that sleeps and raises
on request - for the 500, overload and shutdown cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlflow_server import free_port
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.drift.profile import NumericFeatureProfile, build_profile, load_profile
from tests.e2e.conftest import unique

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
_SCRUB_PREFIXES = ("MLOPS_", "MLFLOW_")
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MIXED = ["x1", "x2", "x3", "color"]


# --------------------------------------------------------------------------------------------------------
# registering models
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _iris_frame(n: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [0.8, 0.4, 1.7, 0.7] + [5.8, 3.0, 3.7, 1.2]
    return pd.DataFrame(np.round(x, 2), columns=IRIS)


def _mixed_frame(n: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n) * 3,
            "x3": rng.integers(0, 5, size=n),
            "color": rng.choice(["red", "green", "blue"], size=n).astype(object),
        }
    )


def _register_tabular(
    name: str, frame: Any, kinds: dict[str, str], classes: list[Any], labels: Any
) -> Registered:
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from mlops_operator.runtime.tabular_model import Architecture, Preprocessor, TabularPyfuncModel

    features = list(frame.columns)
    numeric = [f for f in features if kinds[f] == "numeric"]
    pre = Preprocessor(
        task="classification",
        features=features,
        kinds=kinds,  # type: ignore[arg-type]
        means={f: float(frame[f].mean()) for f in numeric},
        stds={f: float(frame[f].std(ddof=0)) for f in numeric},
        categories={f: sorted(set(map(str, frame[f]))) for f in features if kinds[f] == "categorical"},
        classes=classes,
    )
    arch = Architecture(input_dim=pre.input_dim, hidden=[16, 8], output_dim=pre.output_dim)
    torch.manual_seed(0)
    model = TabularPyfuncModel.from_module(arch.build(), pre, arch)
    example = frame.head(5)
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            input_example=example,
            pip_requirements=["mlflow", "torch"],
            registered_model_name=name,
        )
        columns = {c: frame[c].to_numpy() for c in features}
        columns["label"] = labels
        profile = build_profile(
            columns,
            features=features,
            types=kinds,
            target="label",
            target_type="categorical",  # type: ignore[arg-type]
        )
        mlflow.log_text(profile.to_json(), pc.PROFILE_ARTIFACT)
    return Registered(name, str(info.registered_model_version))


def _register_pytorch(name: str) -> Registered:
    """An ``mlflow.pytorch`` regressor logged the default way (MLflow 3: ``pt2``, a numpy example, so a
    tensor signature (-1, 3) float32)."""
    import mlflow
    import torch

    x = _iris_frame(5, 3)[["sepal_length", "sepal_width", "petal_length"]].to_numpy(dtype=np.float32)
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    net.eval()
    with mlflow.start_run(run_name=name):
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            input_example=x,
            pip_requirements=["mlflow", "torch"],
            registered_model_name=name,
        )
    return Registered(name, str(info.registered_model_version))


QUIRKY_CODE = '''
import time

from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class Quirky(PythonModel):
    """Sleeps 20 ms + max(delay) seconds; raises when any fail > 0; answers 2 * a."""

    def predict(self, context, model_input, params=None):
        time.sleep(0.02 + float(model_input["delay"].max()))
        if (model_input["fail"] > 0).any():
            raise ValueError("quirky model refuses rows with fail > 0")
        return model_input["a"] * 2.0


set_model(Quirky())
'''


def _register_quirky(name: str, workdir: Path) -> Registered:
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    code = workdir / "quirky_model.py"
    code.write_text(QUIRKY_CODE)
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", "a"), ColSpec("double", "delay"), ColSpec("long", "fail")]),
        outputs=Schema([ColSpec("double")]),
    )
    example = pd.DataFrame({"a": [1.0, 2.0], "delay": [0.0, 0.0], "fail": [0, 0]})
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            signature=signature,
            input_example=example,
            pip_requirements=["mlflow"],
            registered_model_name=name,
        )
    return Registered(name, str(info.registered_model_version))


@dataclass(frozen=True)
class Models:
    iris: Registered
    mixed: Registered
    torch: Registered
    quirky: Registered


@pytest.fixture(scope="module")
def models(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Models:
    import mlflow

    mlflow.set_experiment(unique("serve-e2e"))
    iris = _iris_frame(300, 0)
    iris_labels = np.digitize(iris["petal_length"].to_numpy(), [2.5, 4.9])
    mixed = _mixed_frame(300, 1)
    mixed_labels = np.where(mixed["x1"] + (mixed["color"] == "red") > 0.3, "yes", "no")
    return Models(
        iris=_register_tabular(
            unique("serve-iris"), iris, dict.fromkeys(IRIS, "numeric"), [0, 1, 2], iris_labels
        ),
        mixed=_register_tabular(
            unique("serve-mixed"),
            mixed,
            {"x1": "numeric", "x2": "numeric", "x3": "numeric", "color": "categorical"},
            ["no", "yes"],
            mixed_labels,
        ),
        torch=_register_pytorch(unique("serve-torch")),
        quirky=_register_quirky(unique("serve-quirky"), tmp_path_factory.mktemp("quirky")),
    )


# --------------------------------------------------------------------------------------------------------
# the server as a pod would run it
# --------------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    model: Registered
    tracking_uri: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.port}.log"

    @property
    def termination_log(self) -> Path:
        return self.workdir / f"termination-{self.port}"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        return {
            **base,
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), base.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(self.workdir),
            pc.ENV_MODEL_NAME: self.model.name,
            pc.ENV_MODEL_VERSION: self.model.version,
            pc.ENV_MODEL_URI: self.model.uri,
            pc.ENV_MLFLOW_TRACKING_URI: self.tracking_uri,
            pc.ENV_MODELDEPLOYMENT_NAME: "e2e-md",
            pc.ENV_SERVING_ROLE: "primary",
            pc.ENV_SERVER_PORT: str(self.port),
            pc.ENV_POD_NAME: f"e2e-md-{self.port}",
            pc.ENV_TERMINATION_LOG: str(self.termination_log),
            **self.extra_env,
        }

    def start(self, *, wait: bool = True) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlops_operator.runtime.serve"],
                env=self.env(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log()}", pytrace=False)
            with contextlib.suppress(OSError):
                if self.get("/v2/health/ready").status == 200:
                    return
            time.sleep(0.2)
        pytest.fail(f"the server was not ready within {timeout}s:\n{self.log()}", pytrace=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310
                return Reply(
                    response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
                )
        except urllib.error.HTTPError as error:
            return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", path, raw, {"Content-Type": "application/json", **(headers or {})})

    def metrics(self) -> dict[str, float]:
        samples = {}
        for line in self.get("/metrics").body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def serve(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start servers (stopped at the end of the module)."""
    started: list[Server] = []
    root = tmp_path_factory.mktemp("serve")

    def start(model: Registered, wait: bool = True, **env: str) -> Server:
        server = Server(model, mlflow_server, root / f"s{len(started)}", dict(env))
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def iris_server(serve: Any, models: Models, tmp_path_factory: pytest.TempPathFactory) -> Server:
    log = tmp_path_factory.mktemp("inference-log") / "iris.jsonl"
    server: Server = serve(
        models.iris,
        **{
            pc.ENV_INFERENCE_LOG: str(log),
            pc.ENV_LOG_SAMPLE_RATE: "0.5",
            "MLOPS_INFERENCE_LOG_FLUSH_SECONDS": "0.1",
        },
    )
    return server


@pytest.fixture(scope="module")
def quirky_server(serve: Any, models: Models) -> Server:
    server: Server = serve(models.quirky, **{pc.ENV_MAX_INFLIGHT: "2"})
    return server


def _pyfunc_predict(model: Registered, frame: Any) -> Any:
    import mlflow

    return mlflow.pyfunc.load_model(model.uri).predict(frame)


def _oip_columns(frame: Any, datatypes: dict[str, str]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": datatypes[c], "data": frame[c].tolist()}
            for c in frame.columns
        ]
    }


# --------------------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------------------


def test_metadata_and_health(iris_server: Server, models: Models) -> None:
    assert iris_server.get("/v2/health/live").status == 200
    assert iris_server.get("/v2/health/ready").json() == {"ready": True}
    assert iris_server.get("/ping").status == 200 and iris_server.get("/health").status == 200
    meta = iris_server.get(f"/v2/models/{models.iris.name}").json()
    assert meta["name"] == models.iris.name and meta["versions"] == [models.iris.version]
    assert meta["platform"] == "mlflow"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        (c, "FP64", [-1]) for c in IRIS
    ]
    assert meta["outputs"][0]["datatype"] == "INT64"
    assert meta["parameters"]["prediction_path"] == "tabular-fast" and meta["parameters"]["reference_profile"]
    ready = iris_server.get(f"/v2/models/{models.iris.name}/versions/{models.iris.version}/ready")
    assert ready.json() == {"name": models.iris.name, "ready": True}
    assert iris_server.get(f"/v2/models/{models.iris.name}/versions/999").status == 404


def test_iris_predictions_equal_pyfunc_in_every_format(iris_server: Server, models: Models) -> None:
    frame = _iris_frame(25, 42)
    expected = np.asarray(_pyfunc_predict(models.iris, frame)).tolist()
    rows = frame.to_numpy().tolist()
    records = frame.to_dict(orient="records")
    bodies = [
        {"dataframe_split": json.loads(frame.to_json(orient="split"))},
        {"dataframe_records": records},
        {"instances": records},
        {"instances": rows},
        {"inputs": {c: frame[c].tolist() for c in IRIS}},
    ]
    for body in bodies:
        reply = iris_server.post("/invocations", body)
        assert reply.status == 200, reply.body
        assert reply.json() == {"predictions": expected}
    name = models.iris.name
    per_column = iris_server.post(
        f"/v2/models/{name}/infer", {"id": "req-7", **_oip_columns(frame, dict.fromkeys(IRIS, "FP64"))}
    )
    assert per_column.status == 200
    body = per_column.json()
    assert (
        body["model_name"] == name and body["model_version"] == models.iris.version and body["id"] == "req-7"
    )
    assert body["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [25], "data": expected}]
    matrix = {"inputs": [{"name": "input-0", "shape": [25, 4], "datatype": "FP32", "data": rows}]}
    versioned = iris_server.post(f"/v2/models/{name}/versions/{models.iris.version}/infer", matrix)
    assert versioned.json()["outputs"][0]["data"] == expected
    # one row at a time equals the batch (no batch-size dependence)
    for i in range(5):
        one = iris_server.post("/invocations", {"dataframe_records": [records[i]]})
        assert one.json() == {"predictions": [expected[i]]}


def test_mixed_columns_equal_pyfunc(serve: Any, models: Models) -> None:
    server: Server = serve(models.mixed)
    frame = _mixed_frame(30, 7)
    expected = np.asarray(_pyfunc_predict(models.mixed, frame)).tolist()
    assert set(expected) <= {"yes", "no"}
    reply = server.post("/invocations", {"dataframe_split": json.loads(frame.to_json(orient="split"))})
    assert reply.json() == {"predictions": expected}
    oip = server.post(
        f"/v2/models/{models.mixed.name}/infer",
        _oip_columns(frame, {"x1": "FP64", "x2": "FP64", "x3": "INT64", "color": "BYTES"}),
    )
    assert oip.json()["outputs"][0] == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [30],
        "data": expected,
    }
    wrong = server.post("/invocations", {"dataframe_records": [{**frame.iloc[0].to_dict(), "x3": 1.5}]})
    assert wrong.status == 400 and "column 'x3'" in wrong.json()["error"]
    metrics = server.metrics()
    colors = {
        c: metrics[f'{pc.METRIC_FEATURE_CATEGORY}{{category="{c}",feature="color"}}']
        for c in ("red", "green", "blue")
    }
    assert colors == {c: 2 * float((frame["color"] == c).sum()) for c in colors}
    assert metrics[f'{pc.METRIC_FEATURE_CATEGORY}{{category="{pc.OTHER_CATEGORY}",feature="color"}}'] == 0
    assert (
        metrics.get(f'{pc.METRIC_PREDICTIONS}{{output="yes"}}', 0)
        + metrics.get(f'{pc.METRIC_PREDICTIONS}{{output="no"}}', 0)
        == 60
    )
    assert (
        server.get(f"/v2/models/{models.mixed.name}").json()["parameters"]["prediction_path"]
        == "tabular-fast"
    )


def test_pytorch_regressor_without_profile(serve: Any, models: Models) -> None:
    server: Server = serve(models.torch)
    x = _iris_frame(12, 5)[["sepal_length", "sepal_width", "petal_length"]].to_numpy(dtype=np.float32)
    expected = np.asarray(_pyfunc_predict(models.torch, x))
    assert expected.shape == (12, 1)
    reply = server.post("/invocations", {"inputs": x.tolist()})
    assert reply.status == 200, reply.body
    assert reply.json() == {"predictions": expected.tolist()}
    oip = server.post(
        f"/v2/models/{models.torch.name}/infer",
        {"inputs": [{"name": "x", "shape": [12, 3], "datatype": "FP32", "data": x.ravel().tolist()}]},
    )
    assert oip.json()["outputs"][0]["shape"] == [12, 1]
    assert oip.json()["outputs"][0]["data"] == expected.ravel().tolist()
    meta = server.get(f"/v2/models/{models.torch.name}").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["parameters"]["prediction_path"] == "torch-fast"
    bad = server.post("/invocations", {"inputs": [[1.0, 2.0]]})
    assert bad.status == 400 and "dimension 1 must be 3" in bad.json()["error"]
    assert "serving without feature histograms" in server.log()
    metrics = server.metrics()
    assert not any(k.startswith(pc.METRIC_FEATURE_BIN) for k in metrics)
    assert sum(v for k, v in metrics.items() if k.startswith(pc.METRIC_PREDICTIONS)) == 24


# --------------------------------------------------------------------------------------------------------
# bad input: 4xx naming the problem, never 5xx
# --------------------------------------------------------------------------------------------------------

GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_every_kind_of_bad_input_is_a_4xx_naming_the_problem(iris_server: Server, models: Models) -> None:
    infer = f"/v2/models/{models.iris.name}/infer"
    cases: list[tuple[str, Any, int, list[str]]] = [
        ("/invocations", {"instances": [[1.0, 2.0, 3.0]]}, 400, ["row 0 has 3 values, expected 4"]),
        (
            "/invocations",
            {"dataframe_records": [{**GOOD, "petal_width": "wide"}]},
            400,
            ["column 'petal_width'", "double", "'wide'"],
        ),
        (
            "/invocations",
            {"dataframe_records": [{k: v for k, v in GOOD.items() if k != "sepal_width"}]},
            400,
            ["missing column 'sepal_width'"],
        ),
        ("/invocations", {"dataframe_records": [{**GOOD, "colour": 1}]}, 400, ["unexpected column 'colour'"]),
        ("/invocations", b'{"instances": [[1.0, 2.0, 3.0, NaN]]}', 400, ["not valid JSON"]),
        ("/invocations", b'{"instances": [[1.0, 2.0, 3.0, Infinity]]}', 400, ["not valid JSON"]),
        ("/invocations", b'{"instances": [[1.0, 2.0, 3.0, 1e999]]}', 400, ["not valid JSON", "infinity"]),
        (
            "/invocations",
            {"dataframe_records": [{**GOOD, "sepal_length": None}]},
            400,
            ["column 'sepal_length'", "missing value"],
        ),
        ("/invocations", b"this is not json", 400, ["not valid JSON"]),
        ("/invocations", b"", 400, ["empty"]),
        ("/invocations", b"[" * 100_000 + b"]" * 100_000, 400, ["not valid JSON", "depth"]),
        ("/invocations", {"instances": [[[[[[1.0]]]]]]}, 400, ["row 0 has 1 values"]),
        (
            infer,
            {"inputs": [{"name": "m", "shape": [1, 4], "datatype": "FP64", "data": [[[[1, 2, 3, 4]]]]}]},
            400,
            ["input 'm'", "shape [1, 4]"],
        ),
        (
            infer,
            {"inputs": [{"name": "m", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
            400,
            ["input 'm'", "holds 8 values, 'data' has 4"],
        ),
        (
            infer,
            {"inputs": [{"name": "m", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            400,
            ["input 'm'", "4 columns"],
        ),
        (
            infer,
            {"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
            400,
            ["input 'sepal_length'", "BYTES"],
        ),
        (
            infer,
            {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [1.0]} for c in IRIS[:3]]},
            400,
            ["missing column 'petal_width'"],
        ),
        (infer, {"instances": [[1, 2, 3, 4]]}, 400, ["unexpected field 'instances'"]),
        ("/invocations", b"a,b,c\n1,2,3", 415, ["content type"]),
    ]
    for path, body, status, needles in cases:
        headers = {"Content-Type": "text/csv"} if status == 415 else None
        reply = iris_server.post(path, body, headers)
        assert reply.status == status, (body if not isinstance(body, bytes) else body[:80], reply.body[:300])
        message = reply.json()["error"]
        for needle in needles:
            assert needle in message, (needle, message)
    huge = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]] * 300_000}).encode()  # ~6.6 MB > 4 MiB default
    reply = iris_server.post("/invocations", huge)
    assert reply.status == 413 and "exceeds the limit" in reply.json()["error"]
    assert iris_server.post("/invocations", {"instances": [list(GOOD.values())]}).status == 200


def _garbage(rng: random.Random) -> bytes:
    valid = json.dumps({"dataframe_split": {"columns": IRIS, "data": [[5.1, 3.5, 1.4, 0.2]]}}).encode()
    choice = rng.random()
    if choice < 0.3:  # truncated or corrupted valid JSON
        cut = rng.randrange(len(valid))
        return (
            valid[:cut]
            if rng.random() < 0.5
            else valid[:cut] + bytes([rng.randrange(256)]) + valid[cut + 1 :]
        )
    if choice < 0.4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    scalars: list[Any] = [None, True, 0, -1, 2**64, 1.5, "", "x", [], {}, [[]], "NaN"]

    def value(depth: int) -> Any:
        r = rng.random()
        if depth > 3 or r < 0.4:
            return rng.choice(scalars)
        if r < 0.7:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        keys = [
            "inputs",
            "instances",
            "dataframe_split",
            "dataframe_records",
            "columns",
            "data",
            "name",
            "shape",
            "datatype",
            "params",
            *IRIS,
        ]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(4))}

    return json.dumps(value(0)).encode()


def test_fuzzed_bodies_never_get_a_5xx(iris_server: Server, models: Models) -> None:
    rng = random.Random(1234)
    paths = ["/invocations", f"/v2/models/{models.iris.name}/infer"]
    statuses: dict[int, int] = {}
    for _ in range(300):
        reply = iris_server.post(rng.choice(paths), _garbage(rng))
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
        assert reply.status < 500, reply.body[:300]
        if reply.status >= 400:
            assert reply.json()["error"]
    assert statuses.get(400, 0) > 250
    assert iris_server.get("/v2/health/ready").status == 200


# --------------------------------------------------------------------------------------------------------
# metrics, inference log
# --------------------------------------------------------------------------------------------------------


def test_metrics_count_requests_and_feature_bins(
    iris_server: Server, models: Models, mlflow_server: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = client.get_model_version(models.iris.name, models.iris.version).run_id
    profile = load_profile(Path(client.download_artifacts(run_id, pc.PROFILE_ARTIFACT)).read_text())

    def bins(samples: dict[str, float], feature: str) -> list[float]:
        feature_profile = profile.feature(feature)
        assert isinstance(feature_profile, NumericFeatureProfile)
        return [
            samples.get(f'{pc.METRIC_FEATURE_BIN}{{bin="{b}",feature="{feature}"}}', -1)
            for b in range(feature_profile.bins)
        ]

    before = iris_server.metrics()
    frame = _iris_frame(40, 99)
    frame.iloc[0, 0] = 100.0  # far outside the reference range: the last bin
    for start in range(0, 40, 8):
        chunk = frame.iloc[start : start + 8]
        assert (
            iris_server.post(
                "/invocations", {"dataframe_split": json.loads(chunk.to_json(orient="split"))}
            ).status
            == 200
        )
    iris_server.post("/invocations", {"instances": [[1, 2, 3]]})
    after = iris_server.metrics()
    for feature in IRIS:
        delta = [a - b for a, b in zip(bins(after, feature), bins(before, feature), strict=True)]
        feature_profile = profile.feature(feature)
        assert isinstance(feature_profile, NumericFeatureProfile)
        assert delta == feature_profile.histogram(frame[feature].to_numpy()).tolist(), feature
        assert sum(delta) == 40
        assert after[f'{pc.METRIC_FEATURE_MISSING}{{feature="{feature}"}}'] == 0

    def count(samples: dict[str, float], key: str) -> float:
        return samples.get(key, 0.0)

    ok = f'{pc.METRIC_REQUESTS}{{code="200",endpoint="/invocations"}}'
    bad = f'{pc.METRIC_REQUESTS}{{code="400",endpoint="/invocations"}}'
    assert count(after, ok) - count(before, ok) == 5 and count(after, bad) - count(before, bad) == 1
    latency = f'{pc.METRIC_LATENCY}_count{{endpoint="/invocations"}}'
    assert count(after, latency) - count(before, latency) == 6
    assert (
        after[
            f'{pc.METRIC_MODEL_INFO}{{model="{models.iris.name}",role="primary",version="{models.iris.version}"}}'
        ]
        == 1
    )
    assert after[pc.METRIC_INFLIGHT] == 0
    predictions = sum(v - count(before, k) for k, v in after.items() if k.startswith(pc.METRIC_PREDICTIONS))
    assert predictions == 40


def test_inference_log_gets_sampled_lines(iris_server: Server, models: Models) -> None:
    log_path = Path(iris_server.env()[pc.ENV_INFERENCE_LOG])
    for _ in range(60):
        iris_server.post("/invocations", {"dataframe_records": [GOOD]})
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        if len(lines) >= 10:
            break
        time.sleep(0.2)
    assert 10 <= len(lines) < 400  # rate 0.5 of everything sent so far
    records = [json.loads(line) for line in lines]
    assert {r["model"] for r in records} == {models.iris.name} and {r["version"] for r in records} == {
        models.iris.version
    }
    assert {r["role"] for r in records} == {"primary"} and {r["deployment"] for r in records} == {"e2e-md"}
    sample = next(r for r in records if r["inputs"] == {k: [v] for k, v in GOOD.items()})
    assert (
        sample["endpoint"] == "/invocations"
        and sample["rows"] == 1
        and len(sample["outputs"]["predict"]) == 1
    )
    assert sample["timestamp"].endswith("Z")


# --------------------------------------------------------------------------------------------------------
# model failures, overload, shutdown, start-up failures
# --------------------------------------------------------------------------------------------------------


def test_a_model_exception_is_a_500_and_the_server_carries_on(quirky_server: Server) -> None:
    failing = quirky_server.post("/invocations", {"dataframe_records": [{"a": 1.0, "delay": 0.0, "fail": 1}]})
    assert failing.status == 500
    assert "quirky model refuses rows with fail > 0" in failing.json()["error"]
    fine = quirky_server.post("/invocations", {"dataframe_records": [{"a": 1.5, "delay": 0.0, "fail": 0}]})
    assert fine.status == 200 and fine.json() == {"predictions": [3.0]}
    assert quirky_server.metrics()[f'{pc.METRIC_REQUESTS}{{code="500",endpoint="/invocations"}}'] == 1


def test_overload_gives_503_with_retry_after_while_admitted_requests_succeed(quirky_server: Server) -> None:
    body = {"dataframe_records": [{"a": 2.0, "delay": 0.6, "fail": 0}]}
    start = threading.Barrier(8)

    def one(_: int) -> Reply:
        start.wait()
        return quirky_server.post("/invocations", body)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(one, range(8)))
    statuses = sorted(r.status for r in replies)
    assert set(statuses) == {200, 503}, statuses
    assert 2 <= statuses.count(200) <= 4 and statuses.count(503) >= 4
    for reply in replies:
        if reply.status == 503:
            assert reply.headers["retry-after"] == "1" and "overloaded" in reply.json()["error"]
        else:
            assert reply.json() == {"predictions": [4.0]}


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly(
    serve: Any, models: Models, tmp_path: Path
) -> None:
    log = tmp_path / "quirky.jsonl"
    server: Server = serve(
        models.quirky,
        **{
            pc.ENV_INFERENCE_LOG: str(log),
            pc.ENV_LOG_SAMPLE_RATE: "1",
            "MLOPS_INFERENCE_LOG_FLUSH_SECONDS": "60",
        },
    )
    for _ in range(3):
        assert (
            server.post("/invocations", {"dataframe_records": [{"a": 1.0, "delay": 0.0, "fail": 0}]}).status
            == 200
        )
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            server.post, "/invocations", {"dataframe_records": [{"a": 3.0, "delay": 1.5, "fail": 0}]}
        )
        time.sleep(0.5)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        reply = slow.result(timeout=30)
    assert reply.status == 200 and reply.json() == {"predictions": [6.0]}
    assert server.terminate() == 0, server.log()
    # the log writer flushes on shutdown (its 60 s interval never came)
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["inputs"]["delay"] == [1.5]
    assert "shut down" in server.log()


def test_an_unknown_version_exits_with_a_termination_message(serve: Any, models: Models) -> None:
    server: Server = serve(Registered(models.iris.name, "999"), wait=False)
    assert server.process is not None
    assert server.process.wait(timeout=120) == pc.ExitCode.CONFIG_ERROR, server.log()
    message = server.termination_log.read_text()
    assert message.startswith("InvalidConfig: ") and f"models:/{models.iris.name}/999" in message


def test_an_unreachable_mlflow_exits_4(models: Models, tmp_path: Path) -> None:
    server = Server(
        models.iris, f"http://127.0.0.1:{free_port()}", tmp_path, {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    )
    try:
        server.start(wait=False)
        assert server.process is not None
        assert server.process.wait(timeout=120) == pc.ExitCode.MLFLOW_UNAVAILABLE, server.log()
        assert server.termination_log.read_text().startswith("MLflowUnavailable: ")
    finally:
        server.stop()


def test_invalid_environment_exits_2(tmp_path: Path, models: Models) -> None:
    server = Server(models.iris, "http://127.0.0.1:1", tmp_path, {pc.ENV_MODEL_URI: "models:/iris@champion"})
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(timeout=60) == pc.ExitCode.CONFIG_ERROR
    assert "not a pinned registry URI" in server.termination_log.read_text()
