"""A fault-injecting reverse proxy between an operator and the real kube-apiserver, for fault tests.

TLS-terminating HTTP/1.1 proxy on 127.0.0.1: it presents the apiserver's own serving certificate (issued by
the local cluster's CA for 127.0.0.1, so the operator's kubeconfig keeps the cluster CA) and connects
upstream with the admin client certificate. :meth:`FaultProxy.write_kubeconfig` writes a copy of the admin
kubeconfig whose server is the proxy; both of the operator's clients (kopf's aiohttp, the kubernetes
client's urllib3) speak plain HTTP/1.1 through it.

Faults are drawn from a seeded :class:`random.Random` per request (the sequence of requests is not
deterministic -- concurrency -- but the draws and the mix are):

- ``conflict``: a write (POST/PUT/PATCH/DELETE) answered 409 Conflict without reaching the apiserver;
- ``throttle``: any request answered 429 Too Many Requests with ``Retry-After``;
- ``gone``: a watch answered with the in-stream ``ERROR`` event ``410 Gone`` (resource version too old),
  as the apiserver does when a watch's resourceVersion was compacted;
- ``stall``: a watch whose response headers (and maybe a few events) arrive, then nothing, while the
  connection stays open: only a client-side timeout recovers;
- ``drop``: the connection is closed without a response; for writes, after the request reached the
  apiserver half of the time (the write happened, its answer is lost: retries must be idempotent).

``required`` kinds are injected on the first eligible requests, so every run sees each kind at least once.
Every request is recorded (method, path, fault) so a test can also assert who wrote what.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from local_cluster import ClusterInfo

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FAULT_KINDS = ("conflict", "throttle", "gone", "stall", "drop")
_GONE_EVENT = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "too old resource version (injected by fault_proxy)",
        "reason": "Expired",
        "code": 410,
    },
}


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities per request of each fault (0 = never). ``seed`` makes the draws reproducible."""

    seed: int = 0
    conflict: float = 0.0
    throttle: float = 0.0
    gone: float = 0.0
    stall: float = 0.0
    drop: float = 0.0
    retry_after: int = 1
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", [""])[0] in ("true", "1")

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS


@dataclass(frozen=True)
class Record:
    time: float
    method: str
    path: str
    watch: bool
    fault: str | None


def _eligible(kind: str, request: Request) -> bool:
    if kind == "conflict":
        return request.is_write
    if kind in ("gone", "stall"):
        return request.is_watch
    return True  # throttle, drop


@dataclass
class FaultProxy:
    cluster: ClusterInfo
    plan: FaultPlan = field(default_factory=FaultPlan)
    #: requests never faulted (still recorded), e.g. kopf's peering keep-alives
    exempt: Callable[[Request], bool] = lambda request: False
    enabled: bool = True
    port: int = 0
    records: list[Record] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.plan.seed)
        self._pending = list(self.plan.required)
        self._rng.shuffle(self._pending)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        pki = Path(self.cluster.state_dir) / "pki"
        self._server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_ssl.load_cert_chain(str(pki / "apiserver.crt"), str(pki / "apiserver.key"))
        self._client_ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self._client_ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                self._server = await asyncio.start_server(
                    self._handle, "127.0.0.1", self.port, ssl=self._server_ssl
                )
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(serve())
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """The cluster's admin kubeconfig with the proxy as its server (same CA, same client cert)."""
        config = json.loads(Path(self.cluster.kubeconfig).read_text())
        for entry in config["clusters"]:
            entry["cluster"]["server"] = self.server
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    # ------------------------------------------------------------------------------------- queries

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def writes(
        self, since: float = 0.0, exclude: tuple[str, ...] = ("kopfpeerings", "/events")
    ) -> list[Record]:
        """Writes that reached the apiserver (not answered by a fault) since ``since`` (time.monotonic)."""
        return [
            r
            for r in self.snapshot()
            if r.method in WRITE_METHODS
            and r.time >= since
            and r.fault in (None, "drop-after")
            and not any(part in r.path for part in exclude)
        ]

    # ------------------------------------------------------------------------------------- faults

    def _decide(self, request: Request) -> str | None:
        with self._lock:
            if not self.enabled or self.exempt(request):
                return None
            for kind in self._pending:
                if _eligible(kind, request):
                    self._pending.remove(kind)
                    return kind
            draws = {kind: getattr(self.plan, kind) for kind in FAULT_KINDS}
            for kind, probability in draws.items():
                if probability and _eligible(kind, request) and self._rng.random() < probability:
                    return kind
            return None

    def _record(self, request: Request, fault: str | None) -> None:
        with self._lock:
            self.records.append(
                Record(time.monotonic(), request.method, request.path, request.is_watch, fault)
            )
            if fault is not None:
                self.injected[fault.removesuffix("-after").removesuffix("-before")] += 1

    # ---------------------------------------------------------------------------------- the proxy

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                parsed = await _read_request(reader)
                if parsed is None:
                    return
                request, headers, body = parsed
                fault = self._decide(request)
                if fault == "drop":
                    fault = "drop-after" if request.is_write and self._coin() else "drop-before"
                self._record(request, fault)
                if fault == "drop-before":
                    return
                if fault == "conflict":
                    await _write_status(writer, 409, "Conflict", "the object has been modified (injected)")
                    continue
                if fault == "throttle":
                    extra = [("Retry-After", str(self.plan.retry_after))]
                    await _write_status(writer, 429, "TooManyRequests", "slow down (injected)", extra)
                    continue
                if fault == "gone":
                    await _write_gone(writer)
                    return
                if upstream is None:
                    upstream = await asyncio.open_connection(
                        "127.0.0.1", self.cluster.apiserver_port, ssl=self._client_ssl
                    )
                up_reader, up_writer = upstream
                up_writer.write(_encode_request(request, headers, body, self.cluster.apiserver_port))
                await up_writer.drain()
                if fault == "drop-after":
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(_read_response_head(up_reader), 30)
                    return
                keep = await self._relay_response(request, up_reader, reader, writer, fault)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError, ValueError):
            return
        except asyncio.CancelledError:  # stop(): end quietly (asyncio reports cancelled handler tasks)
            return
        finally:
            for stream in (writer, upstream[1] if upstream else None):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
            self._tasks.discard(task)

    def _coin(self) -> bool:
        with self._lock:
            return self._rng.random() < 0.5

    async def _relay_response(
        self,
        request: Request,
        up_reader: asyncio.StreamReader,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: str | None,
    ) -> bool:
        """Relay one response; returns whether both connections may be reused."""
        head, status, headers = await _read_response_head(up_reader)
        writer.write(head)
        names = {name.lower(): value for name, value in headers}
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            await writer.drain()
            return True
        if "chunked" in names.get("transfer-encoding", "").lower():
            stall_after = None
            if fault == "stall":
                with self._lock:
                    stall_after = self._rng.randint(0, 2)
            relayed = 0
            while True:
                if stall_after is not None and relayed >= stall_after:
                    await writer.drain()
                    await _hold_until_closed(reader)
                    return False
                size_line = await up_reader.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                data = await up_reader.readexactly(size + 2)
                writer.write(size_line + data)
                await writer.drain()
                relayed += 1
                if size == 0:
                    return True
        if "content-length" in names:
            writer.write(await up_reader.readexactly(int(names["content-length"])))
            await writer.drain()
            return names.get("connection", "").lower() != "close"
        while chunk := await up_reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        return False


async def _hold_until_closed(reader: asyncio.StreamReader, limit: float = 900) -> None:
    """A stalled stream: send nothing more and wait for the client to give up (its timeout)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[Request, list[tuple[str, str]], bytes] | None:
    line = await reader.readline()
    if not line.strip():
        return None
    method, target, _version = line.decode("latin-1").split(" ", 2)
    headers = await _read_headers(reader)
    names = {name.lower(): value for name, value in headers}
    if "chunked" in names.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(names.get("content-length", "0")))
    split = urlsplit(target)
    return Request(method.upper(), target, split.path, parse_qs(split.query)), headers, body


async def _read_headers(reader: asyncio.StreamReader) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))


async def _read_response_head(reader: asyncio.StreamReader) -> tuple[bytes, int, list[tuple[str, str]]]:
    raw = [await reader.readline()]
    if not raw[0]:
        raise ConnectionResetError("upstream closed")
    status = int(raw[0].split(b" ", 2)[1])
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        raw.append(line)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return b"".join(raw), status, headers


def _encode_request(request: Request, headers: list[tuple[str, str]], body: bytes, port: int) -> bytes:
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    for name, value in headers:
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            continue
        lines.append(f"{name}: {value}")
    lines.append(f"Host: 127.0.0.1:{port}")
    if body or request.method in WRITE_METHODS:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _write_status(
    writer: asyncio.StreamWriter,
    code: int,
    reason: str,
    message: str,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()
    head = [f"HTTP/1.1 {code} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in extra or []]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()


async def _write_gone(writer: asyncio.StreamWriter) -> None:
    event = json.dumps(_GONE_EVENT).encode() + b"\n"
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    writer.write(head.encode() + f"{len(event):x}\r\n".encode() + event + b"\r\n0\r\n\r\n")
    await writer.drain()
