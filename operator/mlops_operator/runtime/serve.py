"""``mlops-serve``: the model server of a ModelDeployment pod.

Configured by the environment the controller sets (``pod_contract``:
MLOPS_MODEL_URI = models:/<name>/<version>, MLFLOW_TRACKING_URI, MLOPS_SERVING_ROLE, MLOPS_SERVER_PORT,
MLOPS_INFERENCE_LOG + MLOPS_LOG_SAMPLE_RATE,
MLOPS_MAX_INFLIGHT, ...; see :mod:`mlops_operator.runtime.serving.config` for the server's own knobs);
``--host``/``--port`` override the listen address.

It listens at once (liveness), loads the pinned version and its reference profile from MLflow in the
background, warms up, and only then reports ready. One process, one event loop (uvicorn; uvloop and
httptools when installed). On SIGTERM it stops accepting connections, finishes in-flight requests (up to
MLOPS_SHUTDOWN_TIMEOUT seconds), flushes the inference log and exits 0. A model that cannot be served
exits with the pod contract's code and termination message (2 invalid config / unknown version,
4 MLflow unreachable, 1 otherwise).

Run: ``python -m mlops_operator.runtime.serve`` (or the ``mlops-serve`` console script).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from mlops_operator.api.v1alpha1.pod_contract import ExitCode
from mlops_operator.runtime.errors import ConfigError, write_termination_message

log = logging.getLogger("mlops_operator.runtime.serve")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("MLOPS_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .serving.app import ServerApp
    from .serving.config import ServerConfig
    from .serving.inference_log import InferenceLogSink, open_sink

    try:
        cfg = ServerConfig.from_env(os.environ, list(sys.argv[1:] if argv is None else argv))
        sink: InferenceLogSink | None = None
        if cfg.inference_log and cfg.sample_rate > 0:
            try:
                sink = open_sink(cfg.inference_log, cfg.pod)
            except (OSError, ImportError, ValueError) as error:
                raise ConfigError(f"cannot open the inference log {cfg.inference_log!r}: {error}") from error
    except ConfigError as error:
        write_termination_message(ExitCode.CONFIG_ERROR, error.message)
        return int(ExitCode.CONFIG_ERROR)

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """SIGTERM/SIGINT start the graceful shutdown; unlike uvicorn's own handling the signal is not
            re-raised afterwards, so a clean shutdown exits 0 (not 143)."""
            if threading.current_thread() is not threading.main_thread():  # pragma: no cover
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    app = ServerApp(cfg, sink=sink)
    server = Server(
        uvicorn.Config(
            app,
            host=cfg.host,
            port=cfg.port,
            loop="auto",
            http="auto",
            ws="none",
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,  # the client address is not used: skip the middleware
            timeout_graceful_shutdown=int(cfg.shutdown_timeout_s) or None,
            timeout_keep_alive=75,
            backlog=4096,
        )
    )

    def stop() -> None:
        server.should_exit = True

    app.on_fatal = stop
    log.info(
        "serving %s (role %s) on %s:%d; inference log %s",
        cfg.model_uri,
        cfg.role,
        cfg.host,
        cfg.port,
        f"{cfg.inference_log} at rate {cfg.sample_rate:g}" if sink is not None else "off",
    )
    server.run()
    if app.exit_code:
        return app.exit_code
    if not server.started:
        write_termination_message(
            ExitCode.UNEXPECTED, f"the server could not listen on {cfg.host}:{cfg.port}"
        )
        return int(ExitCode.UNEXPECTED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
