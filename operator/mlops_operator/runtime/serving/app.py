"""The model server as a minimal ASGI application (no framework on the request path).

Routes (OIP = Open Inference Protocol v2, REST)::

    GET  /v2/health/live                       200 while the process serves HTTP
    GET  /v2/health/ready                      200 once the model is loaded and warmed up, else 503
    GET  /v2                                   server metadata
    GET  /v2/models/{name}[/versions/{v}]      model metadata (inputs/outputs from the signature)
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer   OIP inference request/response
    POST /invocations                          MLflow scoring formats -> {"predictions": ...}
    GET  /ping, /health                        MLflow-style readiness (200 / 503)
    GET  /version                              the served model version
    GET  /metrics                              Prometheus exposition

Every error is a JSON body ``{"error": "..."}``: 4xx for what the client sent (never 5xx), 500 when the
model raised (the server carries on), 503 + ``Retry-After`` while loading or when ``max_inflight``
requests are already being processed (admitted requests are not slowed by the rejected ones).

Predictions run on the event loop when the model is fast (measured at warm-up: the estimated time of the
request's rows is under the inline budget), else in a worker thread, so slow models do not block
health checks and overload is detected while requests wait.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from mlops_operator import __version__
from mlops_operator.api.v1alpha1.pod_contract import ExitCode
from mlops_operator.mlflow_registry.errors import classify
from mlops_operator.runtime.errors import ConfigError, TrainerError, single_line

from . import jsonio
from .batching import MicroBatcher
from .config import ServerConfig
from .errors import ModelError, RequestError
from .histograms import FeatureCounters, PredictionCounters
from .inference_log import InferenceLogger, InferenceLogSink
from .metrics import ServerMetrics
from .model import LoadedModel, load
from .outputs import Outputs, invocations_response, oip_response
from .payload import Batch, parse_invocations, parse_oip
from .schema import oip_datatype
from .shadow import ShadowMirror

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE: Final = b"application/json"
_NOT_JSON_MEDIA: Final = frozenset(
    {
        "text/csv",
        "multipart/form-data",
        "application/octet-stream",
        "application/x-protobuf",
        "application/grpc",
    }
)
SERVER_NAME: Final = "mlops-serve"
#: Seconds a client should wait before retrying a 503 (overload / not ready yet).
RETRY_AFTER_OVERLOAD: Final = b"1"
RETRY_AFTER_LOADING: Final = b"5"
#: Oversized bodies up to this size are read (and dropped) before the 413, so that the client, still
#: sending, reads the answer instead of a connection reset; larger ones are cut off.
DRAIN_LIMIT: Final = 64 * 1024 * 1024

# endpoint labels (bounded set: templates, not paths)
EP_LIVE: Final = "/v2/health/live"
EP_READY: Final = "/v2/health/ready"
EP_SERVER: Final = "/v2"
EP_MODEL: Final = "/v2/models/{name}"
EP_MODEL_READY: Final = "/v2/models/{name}/ready"
EP_INFER: Final = "/v2/models/{name}/infer"
EP_VERSION_MODEL: Final = "/v2/models/{name}/versions/{version}"
EP_VERSION_READY: Final = "/v2/models/{name}/versions/{version}/ready"
EP_VERSION_INFER: Final = "/v2/models/{name}/versions/{version}/infer"
EP_INVOCATIONS: Final = "/invocations"
EP_PING: Final = "/ping"
EP_HEALTH: Final = "/health"
EP_VERSION: Final = "/version"
EP_METRICS: Final = "/metrics"
EP_OTHER: Final = "other"

_FIXED: Final = {
    "/v2/health/live": (EP_LIVE, "GET"),
    "/v2/health/ready": (EP_READY, "GET"),
    "/v2": (EP_SERVER, "GET"),
    "/v2/": (EP_SERVER, "GET"),
    "/invocations": (EP_INVOCATIONS, "POST"),
    "/ping": (EP_PING, "GET"),
    "/health": (EP_HEALTH, "GET"),
    "/version": (EP_VERSION, "GET"),
    "/metrics": (EP_METRICS, "GET"),
}


def route(path: str) -> tuple[str, str, str | None, str | None]:
    """(endpoint label, method, model name, version) of a path; EP_OTHER when unknown."""
    fixed = _FIXED.get(path)
    if fixed is not None:
        return fixed[0], fixed[1], None, None
    if path.startswith("/v2/models/"):
        parts = path[len("/v2/models/") :].split("/")
        if parts and parts[-1] == "":
            parts.pop()
        if parts and parts[0]:
            name = parts[0]
            rest = parts[1:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
                version = rest[1]
                rest = rest[2:]
                labels = (EP_VERSION_MODEL, EP_VERSION_READY, EP_VERSION_INFER)
            else:
                labels = (EP_MODEL, EP_MODEL_READY, EP_INFER)
            if not rest:
                return labels[0], "GET", name, version
            if rest == ["ready"]:
                return labels[1], "GET", name, version
            if rest == ["infer"]:
                return labels[2], "POST", name, version
    return EP_OTHER, "", None, None


def _error(message: str) -> bytes:
    return jsonio.dumps({"error": message})


class ServerApp:
    """The ASGI application of one model server."""

    def __init__(
        self,
        cfg: ServerConfig,
        *,
        loader: Callable[[ServerConfig], LoadedModel] = load,
        sink: InferenceLogSink | None = None,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.loader = loader
        self.sink = sink
        self.on_fatal = on_fatal
        self.model: LoadedModel | None = None
        self.exit_code = 0
        self.failure: str | None = None
        self.inflight = 0
        self.inline_rows = 0
        self.logger: InferenceLogger | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.batcher: MicroBatcher | None = None
        self._metrics: ServerMetrics | None = None
        self._metadata: bytes = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._count_features = cfg.metrics == "full"
        self.mirror: ShadowMirror | None = None
        if cfg.shadow_url and cfg.shadow_percent > 0:
            self.mirror = ShadowMirror(cfg.shadow_url, cfg.shadow_percent)

    # --- metrics (registry created on first use) -----------------------------------------------------
    @property
    def metrics(self) -> ServerMetrics | None:
        if self._metrics is None and self.cfg.metrics != "off":
            self._metrics = ServerMetrics(
                model=self.cfg.model_name,
                version=self.cfg.model_version,
                role=self.cfg.role,
                histograms=self.cfg.metrics == "full",
                log_stats=(lambda: self.logger.stats() if self.logger else {})
                if self.sink is not None
                else None,
                shadow_stats=self.mirror.stats if self.mirror is not None else None,
            )
        return self._metrics

    # --- ASGI ------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.mirror is not None:
                    await self.mirror.close()
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Start the inference-log writer and load the model in a background thread."""
        self._loop = asyncio.get_running_loop()
        _ = self.metrics
        if self.sink is not None and self.cfg.sample_rate > 0:
            self.logger = InferenceLogger(
                self.sink,
                sample_rate=self.cfg.sample_rate,
                static={
                    "model": self.cfg.model_name,
                    "version": self.cfg.model_version,
                    "role": self.cfg.role,
                    "deployment": self.cfg.deployment,
                    "pod": self.cfg.pod,
                },
                queue_size=self.cfg.log_queue,
                flush_interval_s=self.cfg.log_flush_s,
            )
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def shutdown(self) -> None:
        """After in-flight requests finished (uvicorn waits for them): flush the log, stop the worker."""
        if self.logger is not None:
            self.logger.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        log.info("shut down")

    def _load(self) -> None:
        assert self._loop is not None
        try:
            model = self.loader(self.cfg)
        except BaseException as error:
            code, message = _failure(error, self.cfg)
            log.error("cannot serve %s: %s", self.cfg.model_uri, message)
            self._loop.call_soon_threadsafe(self._failed, code, message)
            return
        self._loop.call_soon_threadsafe(self.set_model, model)

    def _failed(self, code: ExitCode, message: str) -> None:
        from mlops_operator.runtime.errors import write_termination_message

        self.exit_code = int(code)
        self.failure = message
        write_termination_message(code, message)
        if self.on_fatal is not None:
            self.on_fatal()

    def set_model(self, model: LoadedModel) -> None:
        """Make ``model`` the served one (called on the event loop once it is loaded and warmed up)."""
        metrics = self.metrics
        if metrics is not None and self._count_features:
            if model.profile is not None and not model.schema.is_tensor:
                metrics.features = FeatureCounters(model.profile, model.schema.columns)
            single = model.sample_output.single() if model.sample_output is not None else None
            if single is not None:
                metrics.predictions = PredictionCounters.for_model(model.profile, single)
        mode, budget = self.cfg.predict_mode, self.cfg.inline_budget_s
        if mode == "inline":
            self.inline_rows = 1 << 62
        elif mode == "thread" or model.cost.fixed_s > budget:
            self.inline_rows = 0
        elif model.cost.per_row_s <= 0:
            self.inline_rows = 1 << 62
        else:
            self.inline_rows = 1 + math.floor((budget - model.cost.fixed_s) / model.cost.per_row_s)
        if self.inline_rows < (1 << 62):
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        if self.cfg.max_batch_size > 1:
            self.batcher = MicroBatcher(
                lambda batch: self._predict(model, batch),
                self.cfg.max_batch_size,
                self.cfg.max_batch_delay_s,
                lambda: self.inflight,
            )
        self._metadata = jsonio.dumps(self._describe(model))
        # the model, torch and MLflow are loaded for good: move them out of the cyclic GC's generations so
        # that collections triggered by request garbage stay short (tail latency)
        gc.collect()
        gc.freeze()
        self.model = model
        if metrics is not None:
            metrics.ready = True
        log.info(
            "ready: %s version %s (%s; requests of up to %s rows predicted on the event loop)",
            model.name,
            model.version,
            model.path,
            self.inline_rows if self.inline_rows < (1 << 62) else "any number of",
        )

    def _describe(self, model: LoadedModel) -> dict[str, Any]:
        if model.output_specs:
            outputs = [
                {"name": o.name, "datatype": o.datatype, "shape": list(o.shape)} for o in model.output_specs
            ]
        elif model.sample_output is not None:
            outputs = [
                {"name": k, "datatype": oip_datatype(v.dtype), "shape": [-1, *v.shape[1:]]}
                for k, v in model.sample_output.arrays.items()
            ]
        else:  # pragma: no cover
            outputs = []
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": "mlflow",
            "inputs": model.schema.describe(),
            "outputs": outputs,
            "parameters": {
                "model_uri": model.uri,
                "run_id": model.run_id,
                "flavors": model.flavors,
                "prediction_path": model.path,
                "reference_profile": model.profile is not None,
                "deployment": self.cfg.deployment,
                "role": self.cfg.role,
                "params": list(model.schema.params),
            },
        }

    # --- HTTP ------------------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        endpoint, method, name, version = route(scope["path"])
        status = 500
        try:
            status = await self._dispatch(scope, receive, send, endpoint, method, name, version)
        finally:
            metrics = self._metrics
            if metrics is not None and status:
                metrics.observe_request(endpoint, status, time.perf_counter() - start)

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: str,
        method: str,
        name: str | None,
        version: str | None,
    ) -> int:
        if endpoint == EP_OTHER:
            return await _send(send, 404, _error(f"no route {scope['path']!r}"))
        request_method = scope["method"]
        if request_method != method and not (method == "GET" and request_method == "HEAD"):
            return await _send(
                send,
                405,
                _error(f"{request_method} is not allowed on {endpoint} (use {method})"),
                allow=method,
            )
        if method == "POST":
            return await self._infer(scope, receive, send, endpoint, name, version)
        if endpoint == EP_LIVE:
            return await _send(send, 200, b'{"live":true}')
        if endpoint == EP_METRICS:
            metrics = self.metrics
            if metrics is None:
                return await _send(send, 404, _error("metrics are disabled (MLOPS_SERVER_METRICS=off)"))
            body, content_type = metrics.render(_header(scope, b"accept"))
            return await _send(send, 200, body, content_type.encode())
        if endpoint == EP_SERVER:
            return await _send(
                send, 200, jsonio.dumps({"name": SERVER_NAME, "version": __version__, "extensions": []})
            )
        model = self.model
        if model is None:
            return await self._not_ready(send)
        if endpoint in (EP_READY, EP_PING, EP_HEALTH):
            return await _send(send, 200, b'{"ready":true}' if endpoint == EP_READY else b'{"status":"ok"}')
        if endpoint == EP_VERSION:
            return await _send(send, 200, jsonio.dumps({"model": model.name, "version": model.version}))
        missing = self._unknown_model(model, name, version)
        if missing is not None:
            return await _send(send, 404, _error(missing))
        if endpoint in (EP_MODEL_READY, EP_VERSION_READY):
            return await _send(send, 200, jsonio.dumps({"name": model.name, "ready": True}))
        return await _send(send, 200, self._metadata)

    async def _not_ready(self, send: Send) -> int:
        why = self.failure or f"model {self.cfg.model_uri} is loading"
        return await _send(
            send, 503, jsonio.dumps({"ready": False, "error": why}), retry_after=RETRY_AFTER_LOADING
        )

    @staticmethod
    def _unknown_model(model: LoadedModel, name: str | None, version: str | None) -> str | None:
        if name is not None and name != model.name:
            return f"model {name!r} is not served here (this server serves {model.name!r})"
        if version is not None and version != model.version:
            return (
                f"version {version!r} of {model.name!r} is not served here "
                f"(this server serves version {model.version})"
            )
        return None

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str, name: str | None, version: str | None
    ) -> int:
        model = self.model
        if model is None:
            return await self._not_ready(send)
        missing = self._unknown_model(model, name, version)
        if missing is not None:
            return await _send(send, 404, _error(missing))
        limit = self.cfg.max_inflight
        if limit and self.inflight >= limit:
            return await _send(
                send,
                503,
                _error(f"overloaded: {self.inflight} requests in flight (limit {limit}); retry later"),
                retry_after=RETRY_AFTER_OVERLOAD,
            )
        self.inflight += 1
        metrics = self._metrics
        if metrics is not None:
            metrics.inflight = self.inflight
        try:
            body = await self._read_body(scope, receive)
            if body is None:  # the client went away
                return 0
            batch, request_id = _parse(body, model, oip=endpoint != EP_INVOCATIONS)
            if metrics is not None:
                metrics.rows += batch.rows
                if metrics.features is not None:
                    metrics.features.observe(batch)
            if self.batcher is not None:
                outputs = await self.batcher.predict(batch)
            else:
                outputs = await self._predict(model, batch)
            response = self._respond(model, batch, outputs, endpoint, request_id)
            status = await _send(send, 200, response)
            if self.mirror is not None:
                self.mirror.maybe_mirror(scope["path"], body)
            return status
        except RequestError as error:
            close = error.status == 413
            return await _send(send, error.status, _error(error.message), close=close)
        except ModelError as error:
            return await _send(send, 500, _error(error.message))
        except Exception as error:  # a bug in the server, not the client's fault nor the model's
            log.exception("internal error on %s", endpoint)
            return await _send(send, 500, _error(f"internal server error: {type(error).__name__}: {error}"))
        finally:
            self.inflight -= 1
            if metrics is not None:
                metrics.inflight = self.inflight

    async def _predict(self, model: LoadedModel, batch: Batch) -> Outputs:
        """On the event loop when the model is fast for this many rows, else in the worker thread."""
        if batch.rows <= self.inline_rows or self.executor is None:
            return model.predict(batch)
        return await asyncio.get_running_loop().run_in_executor(self.executor, model.predict, batch)

    def _respond(
        self, model: LoadedModel, batch: Batch, outputs: Outputs, endpoint: str, request_id: Any
    ) -> bytes:
        metrics = self._metrics
        if metrics is not None and metrics.predictions is not None:
            arrays = outputs.arrays
            if len(arrays) == 1:
                values = next(iter(arrays.values()))
                if values.ndim == 1:
                    metrics.predictions.observe(values)
                elif values.ndim == 2 and values.shape[1] == 1:
                    metrics.predictions.observe(values[:, 0])
        if self.logger is not None:
            self.logger.maybe_log(endpoint, batch.rows, batch.columns or batch.tensors, outputs.arrays)
        if endpoint == EP_INVOCATIONS:
            return jsonio.dumps(invocations_response(outputs))
        return jsonio.dumps(oip_response(model.name, model.version, outputs, request_id))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        limit = self.cfg.max_body_bytes
        content_type = b""
        length = -1
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                length = _content_length(value)
        if content_type and not content_type.startswith(JSON_TYPE):
            # bodies are parsed as JSON whatever they claim (curl -d says form-urlencoded); only formats
            # that are certainly something else are refused up front
            media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            if media in _NOT_JSON_MEDIA:
                raise RequestError(f"unsupported content type {media!r}: send application/json", 415)
        if length > limit:
            if length <= DRAIN_LIMIT:  # read and drop it, so the client gets to read the answer
                await _drain(receive, DRAIN_LIMIT)  # (never more, whatever the client goes on sending)
            raise RequestError(f"request body of {length} bytes exceeds the limit of {limit} bytes", 413)
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_LIMIT - size)
                    raise RequestError(f"request body exceeds the limit of {limit} bytes", 413)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _content_length(value: bytes) -> int:
    """The declared body size; -1 when not a plain decimal. An absurd one (past 18 digits: an exabyte) is
    capped rather than converted (``int()`` refuses strings of more than 4300 digits)."""
    value = value.strip()
    if not value.isdigit():
        return -1
    return int(value) if len(value) <= 18 else 10**18


def _parse(body: bytes, model: LoadedModel, *, oip: bool) -> tuple[Batch, Any]:
    """The validated batch and (OIP) the request's ``id`` to echo."""
    if not body.strip():
        raise RequestError("the request body is empty (expected a JSON document)")
    try:
        data = jsonio.loads(body)
    except jsonio.JSONError as error:
        raise RequestError(f"the request body is not valid JSON: {error}") from None
    try:
        if oip:
            request_id = data.get("id") if type(data) is dict else None
            return parse_oip(data, model.schema), request_id if type(request_id) is str else None
        return parse_invocations(data, model.schema), None
    except RequestError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, MemoryError) as error:
        log.warning("unexpected %s while validating a request", type(error).__name__, exc_info=True)
        raise RequestError(f"invalid request: {type(error).__name__}: {error}") from None


async def _drain(receive: Receive, budget: int) -> None:
    """Read and discard the rest of a request body (up to ``budget`` bytes)."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON_TYPE,
    *,
    retry_after: bytes | None = None,
    allow: str | None = None,
    close: bool = False,
) -> int:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


def _failure(error: BaseException, cfg: ServerConfig) -> tuple[ExitCode, str]:
    """Exit code and message for a model that cannot be served."""
    text = single_line(str(error))[:1000] or type(error).__name__
    if isinstance(error, TrainerError):
        return error.exit_code, error.message
    if isinstance(error, ConfigError):  # pragma: no cover - a TrainerError
        return ExitCode.CONFIG_ERROR, text
    if isinstance(error, ModelError):
        return ExitCode.UNEXPECTED, f"{cfg.model_uri}: {error.message}"
    local_file = isinstance(
        error, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    )
    kind = classify(error) if isinstance(error, Exception) and not local_file else "client"
    if kind == "unavailable":
        return ExitCode.MLFLOW_UNAVAILABLE, f"cannot load {cfg.model_uri} from {cfg.tracking_uri}: {text}"
    if kind == "not_found":
        return ExitCode.CONFIG_ERROR, f"{cfg.model_uri} does not exist in the registry: {text}"
    if kind == "auth":
        return ExitCode.CONFIG_ERROR, f"MLflow refused the credentials while loading {cfg.model_uri}: {text}"
    return ExitCode.UNEXPECTED, f"cannot load {cfg.model_uri}: {type(error).__name__}: {text}"
