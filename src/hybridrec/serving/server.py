"""Run the API under gunicorn: N worker processes, one BLAS thread each.

:func:`serve` prepares the master before any worker forks:

- BLAS thread pools pinned to one thread (``OPENBLAS_NUM_THREADS`` and friends, set in
  the environment the workers inherit, then ``threadpoolctl`` in each worker in case the
  master had already loaded numpy): N workers on N cores do N scorings at once instead of
  fighting over the cores;
- the embedded Redis (when no ``--redis-url`` is given) started once, its unix socket
  passed to the workers as their Redis URL;
- ``PROMETHEUS_MULTIPROC_DIR`` set to a fresh directory, so that ``/metrics`` from any
  worker reports all of them (see :mod:`hybridrec.serving.metrics`).

Each worker then builds its own app (:func:`create_app`): its own Redis clients and its
own reloader thread, after the fork.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..config import Settings

__all__ = ["BLAS_ENV", "JsonLines", "gunicorn_options", "run_wsgi", "serve"]

BLAS_ENV = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, pid, logger, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            fields = {"message": message}
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            **fields,
        }
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _configure_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("hybridrec")
    if not any(isinstance(h.formatter, JsonLines) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _pin_blas() -> None:
    for name in BLAS_ENV:
        os.environ[name] = "1"


def run_wsgi(
    load: Callable[[], Any], options: dict[str, Any], on_ready: Callable[[], None] | None = None
) -> None:
    """Run gunicorn with ``options``; ``load()`` builds the WSGI app in each worker.

    Each worker first limits BLAS to one thread (``threadpoolctl``) and sets up JSON-line
    logging. ``on_ready`` runs in the master once the socket listens.
    """
    from gunicorn.app.base import BaseApplication

    _pin_blas()

    class HybridrecServer(BaseApplication):
        """gunicorn embedded: the options given, the app built after the fork."""

        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25
                # one shared default path would clash between servers on one machine
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("child_exit", _child_exit)
            if on_ready is not None:
                self.cfg.set("when_ready", lambda arbiter: on_ready())

        def load(self):
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)
            _configure_logging()
            return load()

    HybridrecServer().run()


def gunicorn_options(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    *,
    threads: int = 1,
    timeout: int = 30,
    access_log: bool = False,
) -> dict[str, Any]:
    """The gunicorn settings of ``hybridrec serve`` (the benchmark reuses them)."""
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread" if threads > 1 else "sync",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": 10,
        "keepalive": 5,
        "backlog": 2048,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "hybridrec",
        "preload_app": False,
    }


def _child_exit(arbiter, worker) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    *,
    threads: int = 1,
    timeout: int = 30,
    access_log: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the API with gunicorn until SIGINT/SIGTERM (this call does not return).

    ``threads > 1`` uses gunicorn's ``gthread`` workers (keep-alive connections, useful
    behind a proxy that reuses them); the default sync workers are the fastest for
    CPU-bound scoring. ``on_ready`` runs in the master once the socket listens.
    """
    _pin_blas()
    metrics_dir = tempfile.mkdtemp(prefix="hybridrec-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if settings.redis_url is None:
        from ..store.connection import EmbeddedServer

        socket_path = EmbeddedServer(settings.data_dir).start()
        settings = replace(settings, redis_url=f"unix://{socket_path}")
    _configure_logging()
    from .security import exposure_warning

    warning = exposure_warning(host, settings.api_token)
    if warning:
        logging.getLogger("hybridrec.serving").warning(
            json.dumps({"event": "exposed", "warning": warning})
        )
    options = gunicorn_options(
        host, port, workers, threads=threads, timeout=timeout, access_log=access_log
    )

    def load():
        from .app import create_app

        return create_app(settings)

    try:
        run_wsgi(load, options, on_ready)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(metrics_dir)
