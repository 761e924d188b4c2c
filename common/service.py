"""Process start-up, the same for every stage: settings, threads, HTTP endpoints, signals, the loop.

A stage module provides ``build_stage(settings: ItsSettings) -> Stage``; ``main(build_stage)`` reads
``ItsSettings`` (named by that annotation) from the environment, builds the stage and serves it. Any
start-up failure is one log line naming what to change, and exit code 2 — never a traceback.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import signal
import typing
from typing import Callable, TypeVar

from .errors import FatalError
from .health import serve_http
from .runtime import Runtime
from .settings import ImageSettings, KafkaSettings, RuntimeSettings, S3Settings, StageSettings, load
from .stage import Stage
from .topology import resolve, spec
from .storage import ObjectStore

__all__ = ["main", "run_stage", "serve"]

log = logging.getLogger("deskgen.service")

S = TypeVar("S", bound=StageSettings)


def run_stage(name: str) -> int:
    """``deskgen run NAME``: serve the stage registered under ``name`` in ``topology.STAGES``."""
    return main(resolve(f"{spec(name).module}:build_stage"))


def main(build_stage: Callable[[S], Stage]) -> int:
    """Read the stage's settings, build the stage and serve it until SIGTERM; returns the exit code."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings_cls = next(iter(typing.get_type_hints(build_stage).values()))
    try:
        settings = load(settings_cls)
        if settings.threads and importlib.util.find_spec("torch"):
            import torch  # torch-free stages (the ONNX classifier) give threads to their own runtime

            torch.set_num_threads(settings.threads)
        stage = build_stage(settings)
    except FatalError as exc:
        log.error("cannot start: %s", exc)
        return 2
    return serve(stage)


def serve(stage: Stage) -> int:
    """Run ``stage`` as a service: runtime settings from the environment, HTTP endpoints, SIGTERM handling."""
    try:
        runtime_settings = load(RuntimeSettings)
        logging.getLogger().setLevel(runtime_settings.log_level.upper())
        runtime = Runtime(stage, runtime=runtime_settings, kafka=load(KafkaSettings),
                          store=ObjectStore(load(S3Settings)), images=load(ImageSettings))
        server = _serve_http(runtime, runtime_settings)
    except FatalError as exc:
        log.error("cannot start %s: %s", stage.name, exc)
        return 2
    log.info("%s: /metrics /healthz /readyz on %s:%d", stage.name, *server.server_address[:2])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runtime.stop())
    try:
        return runtime.run()
    finally:
        server.shutdown()


def _serve_http(runtime: Runtime, settings: RuntimeSettings):
    try:
        return serve_http(runtime.health, settings.http_host, settings.http_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise FatalError(f"port {settings.http_port} on {settings.http_host} is in use (another service?): "
                             "set DESKGEN_HTTP_PORT to a free port, or 0 to pick one") from None
        raise FatalError(f"cannot listen on {settings.http_host}:{settings.http_port} ({exc.strerror}): "
                         "check DESKGEN_HTTP_HOST and DESKGEN_HTTP_PORT") from None
