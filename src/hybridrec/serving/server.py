"""Run the API under a production WSGI server: N worker processes, one BLAS thread each.

Two servers, the same guarantees (``benchmarks/bench_server.py`` compares them):

- ``granian`` (the default): a Rust HTTP server with a WSGI interface; each worker is a
  process whose Rust runtime parses HTTP and keeps connections alive, and whose one
  Python thread runs the app. About twice gunicorn's throughput on a bare endpoint.
- ``gunicorn``: sync workers (``--threads`` > 1: gthread workers with keep-alive).

:func:`run_app` runs any WSGI app factory under either, with ``factory()`` called in
each worker after it starts, BLAS pinned to one thread there (``threadpoolctl``, and
``OPENBLAS_NUM_THREADS`` and friends set before the workers start) and JSON-line logging
(:mod:`hybridrec.logs`), including the server's own lines. Dead workers are replaced.

:func:`serve` is ``hybridrec serve``. Before any worker starts, the master

- starts the embedded Redis once (when no ``--redis-url`` is given) and passes its unix
  socket to the workers as their Redis URL;
- sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory, so that ``/metrics`` from any
  worker reports all of them (see :mod:`hybridrec.serving.metrics`);
- starts a :class:`Supervisor` thread: it restarts the embedded Redis when it dies (its
  append-only file brings the data back) and drops a dead worker's live gauges.

Each worker then builds its own app (:func:`create_app`): its own Redis clients and its
own reloader thread, and it loads the published model *before* it takes a request, so a
replacement worker never answers 503 while another worker could answer. SIGTERM or
SIGINT stops the workers gracefully (in-flight requests finish) and the master returns.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import HybridrecError
from ..logs import configure_logging, log_event, logging_dict_config

__all__ = [
    "BLAS_ENV",
    "DEFAULT_SERVER",
    "SERVERS",
    "Supervisor",
    "check_port",
    "choose_server",
    "run_app",
    "serve",
]

SERVERS = ("granian", "gunicorn")
DEFAULT_SERVER = "granian"
READY_TIMEOUT = 20.0  # seconds a new worker waits for its first model before taking requests
GRACEFUL_TIMEOUT = 10  # seconds in-flight requests get on SIGTERM before workers are killed

BLAS_ENV = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

log = logging.getLogger("hybridrec.server")


def _pin_blas() -> None:
    for name in BLAS_ENV:
        os.environ[name] = "1"


def choose_server(requested: str | None, settings: Settings) -> str:
    """The server to run: ``requested``, else granian unless the API token is not ASCII.

    granian hands the app an empty value for a header that is not ASCII, so a non-ASCII
    ``HYBRIDREC_API_TOKEN`` (sent in UTF-8, as curl and browsers do) could never match:
    such a token gets gunicorn by default, and an explicit ``--server granian`` is refused.
    """
    ascii_token = settings.api_token is None or settings.api_token.isascii()
    if requested is None:
        return DEFAULT_SERVER if ascii_token else "gunicorn"
    if requested not in SERVERS:
        raise HybridrecError(f"unknown server {requested!r}; choose one of {', '.join(SERVERS)}")
    if requested == "granian" and not ascii_token:
        raise HybridrecError(
            "HYBRIDREC_API_TOKEN is not ASCII, and granian passes only ASCII header values "
            "to the app, so no request could match it: use --server gunicorn, or an ASCII token"
        )
    return requested


def check_port(host: str, port: int) -> None:
    """Raise :class:`HybridrecError` naming ``--port`` when ``host:port`` cannot be bound.

    Called before any loading or training, so that a busy port fails in a second.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                other = 8080 if port != 8080 else 8081
                raise HybridrecError(
                    f"port {port} on {host} is already in use; choose another with "
                    f"--port {other} (make demo PORT={other})"
                ) from None
            raise HybridrecError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host "
                "(make demo HOST=...) and --port"
            ) from None


class _WorkerApp:
    """What each worker runs first: one BLAS thread, JSON logs, then ``factory()``.

    A module-level class (picklable), so that it also works when the server spawns its
    workers instead of forking them.
    """

    def __init__(self, factory: Callable[[], Any], *, default_signals: bool = False):
        self.factory = factory
        self.default_signals = default_signals

    def __call__(self, *_ignored: Any) -> Any:
        from threadpoolctl import threadpool_limits

        if self.default_signals:
            # granian installs the worker's handlers after the app is built, and a forked
            # worker inherits the master's meanwhile, which would swallow a SIGTERM sent
            # while it loads: then it just ends (it has taken no request yet)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)

        threadpool_limits(limits=1)
        configure_logging()
        return self.factory()


def run_app(
    factory: Callable[[], Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    *,
    server: str = DEFAULT_SERVER,
    threads: int = 4,
    timeout: int = 30,
    access_log: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the WSGI app that ``factory()`` builds in each of ``workers`` processes,
    until SIGINT/SIGTERM; then return after a graceful stop.

    ``threads``: Python threads per worker running the app. ``timeout`` (gunicorn only):
    seconds of silence before a stuck worker is killed and replaced. ``on_ready`` runs in
    the master once the server is set up, before the workers start.
    """
    if server not in SERVERS:
        raise HybridrecError(f"unknown server {server!r}; choose one of {', '.join(SERVERS)}")
    _pin_blas()
    configure_logging()
    load = _WorkerApp(factory, default_signals=server == "granian")
    if server == "granian":
        _run_granian(load, host, port, workers, threads, access_log, on_ready)
    else:
        _run_gunicorn(load, host, port, workers, threads, timeout, access_log, on_ready)


def _run_granian(load, host, port, workers, threads, access_log, on_ready) -> None:
    try:
        from granian.constants import Interfaces
        from granian.server import Server
    except ImportError:
        raise HybridrecError(
            "the granian server is not installed: pip install granian, or use --server gunicorn"
        ) from None
    server = Server(
        "hybridrec",  # only names the processes: the app comes from target_loader
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        backlog=2048,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_TIMEOUT,
        websockets=False,
        log_access=access_log,
        log_dictconfig=logging_dict_config({"_granian": "INFO", "granian.access": "INFO"}),
    )
    if on_ready is not None:
        server.on_startup(on_ready)
    server.serve(target_loader=load, wrap_loader=False)


def _run_gunicorn(load, host, port, workers, threads, timeout, access_log, on_ready) -> None:
    from gunicorn.app.base import BaseApplication

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread" if threads > 1 else "sync",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": 5,
        "backlog": 2048,
        "accesslog": "-" if access_log else None,
        "logconfig_dict": logging_dict_config(
            {"gunicorn.error": "INFO", "gunicorn.access": "INFO"}
        ),
        "proc_name": "hybridrec",
        "preload_app": False,
    }

    class HybridrecServer(BaseApplication):
        """gunicorn embedded: the options given, the app built after the fork."""

        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25
                # one shared default path would clash between servers on one machine
                self.cfg.set("control_socket_disable", True)
            if on_ready is not None:
                self.cfg.set("when_ready", lambda arbiter: on_ready())

        def load(self):
            return load()

    try:
        HybridrecServer().run()
    except SystemExit as exc:  # the arbiter exits; a clean stop is a return
        if exc.code not in (None, 0):
            raise


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    *,
    server: str | None = None,
    threads: int = 4,
    timeout: int = 30,
    access_log: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the API until SIGINT/SIGTERM, then return (see the module's docstring).

    ``server``: ``granian`` or ``gunicorn``; None: :func:`choose_server` decides.
    """
    server = choose_server(server, settings)
    _pin_blas()
    configure_logging()
    metrics_dir = tempfile.mkdtemp(prefix="hybridrec-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    embedded = None
    if settings.redis_url is None:
        from ..store.connection import EmbeddedServer

        embedded = EmbeddedServer(settings.data_dir)
        settings = replace(settings, redis_url=f"unix://{embedded.start()}")
    from .security import exposure_warning

    warning = exposure_warning(host, settings.api_token)
    if warning:
        log_event(
            logging.getLogger("hybridrec.serving"), logging.WARNING, "exposed", warning=warning
        )
    wait = min(READY_TIMEOUT, timeout - 5) if server == "gunicorn" else READY_TIMEOUT
    supervisor = Supervisor(embedded, metrics_dir).start()
    try:
        run_app(
            partial(_hybridrec_app, settings, wait),
            host,
            port,
            workers,
            server=server,
            threads=threads,
            timeout=timeout,
            access_log=access_log,
            on_ready=on_ready,
        )
    finally:
        supervisor.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(metrics_dir)


def _hybridrec_app(settings: Settings, wait_ready: float):
    from .app import create_app

    return create_app(settings, wait_ready=wait_ready)


# -- the master's supervisor ---------------------------------------------------------------


class Supervisor:
    """A thread in the serve master that keeps what the workers share alive.

    - **Embedded Redis**: when its process is gone while its pidfile remains (it died
      without shutting down: kill -9, OOM, crash), start it again; it reloads its
      append-only file, and the workers' clients reconnect by themselves. A server that
      shut down cleanly (``hybridrec redis stop`` removes the pidfile) is left stopped.
    - **Metrics of dead workers**: their live gauges (``liveall`` files in the
      multiprocess directory) are dropped, so ``/metrics`` reports live workers only.
    """

    def __init__(self, embedded: Any = None, metrics_dir: str | None = None, tick: float = 0.2):
        self.embedded = embedded
        self.metrics_dir = metrics_dir
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped_cleanly = False
        self.restarts = 0

    def start(self) -> Supervisor:
        # Import now what the thread may need: the server forks workers while the thread
        # runs, and a child would hang on a module lock held by an import in this thread.
        import fcntl  # noqa: F401  (EmbeddedServer.start)

        from ..store import connection  # noqa: F401  (_pid_alive)

        if self.metrics_dir:
            from prometheus_client import multiprocess  # noqa: F401
        self._thread = threading.Thread(target=self._run, name="hybridrec-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                if self.embedded is not None:
                    self._watch_redis()
                if self.metrics_dir:
                    self._drop_dead_gauges()
            except Exception as exc:  # the supervisor must outlive any one failure
                log_event(log, logging.ERROR, "supervisor_error", error=repr(exc))

    def _watch_redis(self) -> None:
        server = self.embedded
        if server.pid() is not None:
            self._stopped_cleanly = False
            return
        if not server.pidfile.exists():  # shut down on purpose: leave it stopped
            if not self._stopped_cleanly:
                self._stopped_cleanly = True
                log_event(
                    log, logging.WARNING, "embedded_redis_stopped", restart=False,
                    data_dir=server.data_dir,
                )  # fmt: skip
            return
        started = time.monotonic()
        log_event(log, logging.ERROR, "embedded_redis_died", data_dir=server.data_dir)
        try:
            server.start()
        except HybridrecError as exc:
            log_event(log, logging.ERROR, "embedded_redis_restart_failed", error=str(exc))
            self._stop.wait(1.0)
            return
        self.restarts += 1
        log_event(
            log, logging.WARNING, "embedded_redis_restarted", redis_pid=server.pid(),
            seconds=round(time.monotonic() - started, 3),
        )  # fmt: skip

    def _drop_dead_gauges(self) -> None:
        from ..store.connection import _pid_alive

        pids = set()
        for path in Path(self.metrics_dir).glob("gauge_live*_*.db"):
            pid = path.stem.rpartition("_")[2]
            if pid.isdigit():
                pids.add(int(pid))
        dead = [pid for pid in pids if not _pid_alive(pid, command="")]
        if dead:
            from prometheus_client import multiprocess

            for pid in dead:
                multiprocess.mark_process_dead(pid, self.metrics_dir)
