"""The container images and the compose stack, built and run for real with podman.

One stack per module run (a unique compose project, image tag and loopback port, so
parallel runs never collide): build the images from the current tree, bring the stack up,
wait for /readyz through the load balancer, ask for recommendations, stop one API
replica under load, publish a new model from the trainer's container and watch both
replicas switch, then remove everything it created (containers, volumes, network, the
images it built).

Every image layer is built from the working tree on every run (``BUILDAH_LAYERS=false``:
no layer cache to reuse, so the run proves the current tree builds): only the build's
cache mounts (apt's .debs and a wheelhouse of the dependencies, LightFM compiled with
``LIGHTFM_NO_CFLAGS=1``) survive between runs, and they hold third-party packages, keyed
by their versions, never our code. The same images then run the stack a second time on
the ``cluster`` profile (a 3-master Redis Cluster). Cost on this 2-core machine, shared
and loaded (load average 15-20): about 8.5 minutes with warm build caches (build 4,
first stack to ready 1.5, checks 1, cluster stack 1.5, teardowns 0.5); add about a
minute and a half when the build caches are empty (every wheel fetched, LightFM compiled).

Needs podman (rootful, runc), ``podman-compose`` (the dev extra) and a base image: the
official ``python:3.11-slim`` when it is present, else ``localhost/hybridrec-base:bookworm``
(``deploy/make-base-image.sh``, which ``.ci/run`` runs). Skips saying why where podman
cannot run; with ``HYBRIDREC_REQUIRE_CONTAINERS=1`` (set by ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from .conftest import _free_port

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
LOCAL_BASE = "localhost/hybridrec-base:bookworm"
OFFICIAL_BASE = "docker.io/library/python:3.11-slim"
SERVICES_BUILT = ("hybridrec", "hybridrec-redis", "hybridrec-balancer")


def _unavailable(reason: str):
    if os.environ.get("HYBRIDREC_REQUIRE_CONTAINERS") == "1":
        pytest.fail(f"containers test required (HYBRIDREC_REQUIRE_CONTAINERS=1): {reason}")
    pytest.skip(reason)


def _podman_compose() -> str | None:
    beside = Path(sys.executable).parent / "podman-compose"
    return str(beside) if beside.exists() else shutil.which("podman-compose")


@dataclass
class Stack:
    """A compose project of this test run, driven through podman-compose and podman."""

    project: str
    port: int
    env: dict[str, str]
    compose_cmd: list[str]
    token: str
    report: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return self._run([*self.compose_cmd, *args], timeout)

    def podman(self, *args: str, timeout: float = 60, check: bool = True):
        return self._run(["podman", *args], timeout, check=check)

    def _run(self, cmd: list[str], timeout: float, check: bool = True):
        done = subprocess.run(
            cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd[:4])}... exited {done.returncode}\n"
                f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
            )
        return done

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def containers(self, service: str, *, running: bool = True) -> list[str]:
        """Names of this project's containers of ``service``."""
        done = self.podman(
            "ps",
            *([] if running else ["-a"]),
            "--filter",
            f"label=io.podman.compose.project={self.project}",
            "--filter",
            f"label=io.podman.compose.service={service}",
            "--format",
            "{{.Names}}",
        )
        return sorted(done.stdout.split())

    def inside(self, container: str, path: str) -> tuple[int, dict]:
        """GET ``path`` on the API inside ``container`` (no address but loopback is used)."""
        script = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen('http://127.0.0.1:8000{path}', timeout=5)\n"
            "except urllib.error.HTTPError as e:\n"
            "    r = e\n"
            "print(r.status); print(r.read().decode())\n"
        )
        done = self.podman("exec", container, "python3", "-c", script, check=False)
        if done.returncode != 0:
            return 0, {"error": done.stderr[-500:]}
        status, _, body = done.stdout.partition("\n")
        return int(status), json.loads(body)

    def logs(self) -> str:
        out = []
        for name in self.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}",
            "--format", "{{.Names}}", check=False,
        ).stdout.split():  # fmt: skip
            tail = self.podman("logs", "--tail", "15", name, check=False)
            out.append(f"--- {name}\n{tail.stdout[-1500:]}{tail.stderr[-1500:]}")
        return "\n".join(out)


def _base_image(env: dict[str, str]) -> str:
    wanted = os.environ.get("BASE_IMAGE")
    candidates = [wanted] if wanted else [OFFICIAL_BASE, LOCAL_BASE]
    for image in candidates:
        if _exists(image, env):
            return image
    _unavailable(
        f"no base image ({' or '.join(candidates)}): run deploy/make-base-image.sh "
        "(.ci/run does when python:3.11-slim cannot be pulled)"
    )


def _reporter(config: pytest.Config) -> Callable[[str], None]:
    """Print past pytest's capture: the measured times belong in the run's output."""
    capture = config.pluginmanager.getplugin("capturemanager")

    def report(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(line, file=sys.stderr, flush=True)

    return report


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest):
    if shutil.which("podman") is None:
        _unavailable("podman is not installed (.ci/run installs Debian's podman and runc)")
    compose = _podman_compose()
    if compose is None:
        _unavailable("podman-compose is not installed (pip install podman-compose)")
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "containers.conf"))
    base = _base_image(env)
    probe = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", "--entrypoint", "true", base],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if probe.returncode != 0:
        _unavailable(f"podman cannot run a container here: {probe.stderr.strip()[-300:]}")

    project = f"hrtest{os.getpid()}{uuid.uuid4().hex[:6]}"
    token = uuid.uuid4().hex
    env.update(
        BASE_IMAGE=base,
        BUILDAH_FORMAT="docker",  # keeps the HEALTHCHECK (OCI images drop it)
        BUILDAH_LAYERS="false",  # every layer from the current tree, nothing cached
        HYBRIDREC_IMAGE_TAG=project,
        HYBRIDREC_PORT=str(_free_port()),
        HYBRIDREC_API_TOKEN=token,
        HYBRIDREC_API_WORKERS="1",
        HYBRIDREC_RETRAIN_EVERY="6h",
        HYBRIDREC_BOOTSTRAP_EPOCHS="5",
    )
    env.pop("HYBRIDREC_STACK_REDIS_URL", None)
    env.pop("COMPOSE_PROFILES", None)
    st = Stack(
        project=project,
        port=int(env["HYBRIDREC_PORT"]),
        env=env,
        compose_cmd=[compose, "-p", project, "-f", str(ROOT / "compose.yaml")],
        token=token,
        report=_reporter(request.config),
    )
    try:
        t0 = time.monotonic()
        st.compose("build", timeout=1200)
        st.timings["build_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        st.compose("up", "-d", timeout=600)
        _wait_ready(st, deadline=time.monotonic() + 300)
        st.timings["up_to_ready_s"] = time.monotonic() - t0
        yield st
    except BaseException:
        print(st.logs(), file=sys.stderr)
        raise
    finally:
        _teardown(st)


def _exists(image: str, env: dict[str, str]) -> bool:
    done = subprocess.run(
        ["podman", "image", "exists", image], env=env, capture_output=True, timeout=30
    )
    return done.returncode == 0


def _wait_ready(st: Stack, deadline: float) -> None:
    last = None
    while time.monotonic() < deadline:
        try:
            answer = requests.get(st.url("/readyz"), timeout=2)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:200]}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"/readyz through the balancer never answered 200 (last: {last})")


def _teardown(st: Stack, *, images: bool = True) -> None:
    """``compose down -v``, remove the images built (``images``), check nothing is left."""
    label = f"label=io.podman.compose.project={st.project}"
    names = st.podman("ps", "-a", "-q", "--filter", label).stdout.split()
    mounted = set()  # named and anonymous volumes alike
    for container in json.loads(st.podman("inspect", *names).stdout) if names else []:
        mounted |= {m["Name"] for m in container["Mounts"] if m.get("Type") == "volume"}
    st.compose("down", "-v", "-t", "10", timeout=300)
    built = [f"localhost/{name}:{st.env['HYBRIDREC_IMAGE_TAG']}" for name in SERVICES_BUILT]
    if images and (present := [i for i in built if _exists(i, st.env)]):
        st.podman("rmi", *present, timeout=300)
    volumes = set(st.podman("volume", "ls", "-q").stdout.split())
    left = {
        "containers": st.podman("ps", "-a", "-q", "--filter", label).stdout.split(),
        "volumes": sorted(mounted & volumes)
        + st.podman("volume", "ls", "-q", "--filter", label).stdout.split(),
        "networks": [
            n
            for n in st.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith(st.project)
        ],
        "images": [i for i in built if images and _exists(i, st.env)],
    }
    assert not any(left.values()), f"the test left behind: {left}"
    summary = {k: round(v, 1) for k, v in st.timings.items()} | st.notes
    st.report(f"\ncontainers ({st.project}): {json.dumps(summary)}")


def _auth(st: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {st.token}"}


def _model_version(st: Stack) -> str:
    return requests.get(st.url("/v1/model"), timeout=5).json()["model_version"]


# ---------------------------------------------------------------------------- the image


def test_image_is_slim_non_root_with_healthcheck_and_init(stack: Stack):
    image = f"localhost/hybridrec:{stack.project}"
    inspected = json.loads(stack.podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "hybridrec"
    assert config["Entrypoint"][:2] == ["tini", "--"]
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck")  # podman, docker
    assert healthcheck and "hybridrec-healthcheck" in healthcheck["Test"], inspected.keys()
    stack.notes["image_mb"] = round(inspected["Size"] / 1e6)
    # no compiler in the runtime image; LightFM's compiled module imports
    probe = stack.podman(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
        "for c in gcc cc x86_64-linux-gnu-gcc-12; do command -v $c && exit 1; done; "
        "python3 -c 'import lightfm._lightfm_fast_openmp; print(\"ok\")'; id -u",
        check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.split() == ["ok", "10001"]
    # the HEALTHCHECK command passes on a serving replica (podman runs it on demand here:
    # without systemd nothing schedules it)
    api = stack.containers("api")[0]
    assert stack.podman("healthcheck", "run", api, check=False).returncode == 0


# ------------------------------------------------------------------ through the balancer


def test_recommendations_through_the_balancer(stack: Stack):
    known = requests.get(stack.url("/v1/users/1/recommendations?k=5"), timeout=10)
    assert known.status_code == 200, known.text
    body = known.json()
    assert body["strategy"] == "personalized"
    assert body["user_case"] == "known_with_features"
    assert len(body["items"]) == 5 and not body["degraded"]
    assert all(item.get("title") for item in body["items"]), body  # the bootstrap's titles

    visitor = requests.post(
        stack.url("/v1/recommendations"),
        json={"features": {"genre:Comedy": 1, "genre:Romance": 1}, "k": 5},
        timeout=10,
    )
    assert visitor.status_code == 200, visitor.text
    assert visitor.json()["user_case"] == "new_with_features"
    assert visitor.json()["strategy"] == "personalized"
    assert len(visitor.json()["items"]) == 5

    # the token reaches the replicas: an admin call without it is refused, with it accepted
    assert requests.post(stack.url("/v1/admin/reload"), timeout=10).status_code == 401
    reload = requests.post(stack.url("/v1/admin/reload"), headers=_auth(stack), timeout=10)
    assert reload.status_code == 200, reload.text


def test_requests_keep_succeeding_while_one_replica_stops(stack: Stack):
    replicas = stack.containers("api")
    assert len(replicas) == 2, replicas
    results: list[int | str] = []
    stop = threading.Event()

    def load() -> None:
        with requests.Session() as session:
            for i in range(100_000):  # bounded; ends when `stop` is set
                if stop.is_set():
                    return
                try:
                    answer = session.get(
                        stack.url(f"/v1/users/{1 + i % 600}/recommendations?k=10"), timeout=10
                    )
                    results.append(answer.status_code)
                except requests.RequestException as exc:
                    results.append(type(exc).__name__)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(2)
        before = len(results)
        t0 = time.monotonic()
        stack.podman("stop", "-t", "10", replicas[0], timeout=60)
        stop_seconds = time.monotonic() - t0
        during = len(results) - before
        time.sleep(4)  # the balancer now sends everything to the other replica
    finally:
        stop.set()
        worker.join(30)
    failures = [r for r in results if r != 200]
    stack.notes["failover"] = {
        "requests": len(results),
        "during_stop": during,
        "failures": len(failures),
        "stop_s": round(stop_seconds, 1),
    }
    assert len(results) > 20, results
    assert during > 0, "no request was sent while the replica stopped"
    assert not failures, f"{len(failures)} of {len(results)} failed: {failures[:10]}"
    # tini passes SIGTERM on and the server exits by itself: no SIGKILL after 10 s
    state = json.loads(stack.podman("inspect", replicas[0]).stdout)[0]["State"]
    assert state["ExitCode"] != 137 and stop_seconds < 9, (state["ExitCode"], stop_seconds)

    stack.podman("start", replicas[0], timeout=60)
    deadline = time.monotonic() + 120
    while stack.inside(replicas[0], "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the restarted replica never became ready"
        time.sleep(1)


def test_a_publish_from_the_trainer_switches_both_replicas(stack: Stack):
    replicas = stack.containers("api")
    assert len(replicas) == 2, replicas
    before = _model_version(stack)
    trainer = stack.containers("trainer")
    assert len(trainer) == 1, trainer
    done = stack.podman(
        "exec", trainer[0], "hybridrec", "train", "--publish", "--epochs", "2", timeout=600
    )
    version = done.stdout.strip().splitlines()[-1]
    assert version and version != before
    published = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < len(replicas) and time.monotonic() - published < 60:
        for name in replicas:
            if (
                name not in seen
                and stack.inside(name, "/v1/model")[1].get("model_version") == version
            ):
                seen[name] = time.monotonic() - published
        time.sleep(0.2)
    stack.notes["switch_s"] = {name[-5:]: round(s, 1) for name, s in seen.items()}
    assert len(seen) == len(replicas), f"replicas on {version} after 60 s: {sorted(seen)}"
    for _ in range(6):  # and the balancer only hands out the new version
        assert _model_version(stack) == version
    listed = stack.podman("exec", trainer[0], "hybridrec", "models", "list")
    assert f"* {version}" in listed.stdout


# ------------------------------------------------------------------ the cluster profile


def test_the_cluster_profile_runs_the_same_stack_on_three_masters(stack: Stack):
    """deploy/cluster.env: the same services on a 3-master Redis Cluster (same images)."""
    project = f"{stack.project}c"
    env = dict(stack.env, HYBRIDREC_PORT=str(_free_port()), HYBRIDREC_BOOTSTRAP_EPOCHS="1")
    cluster = Stack(
        project=project,
        port=int(env["HYBRIDREC_PORT"]),
        env=env,
        compose_cmd=[
            stack.compose_cmd[0], "-p", project,
            "--env-file", str(ROOT / "deploy" / "cluster.env"),
            "-f", str(ROOT / "compose.yaml"),
        ],
        token=stack.token,
        report=stack.report,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        cluster.compose("up", "-d", timeout=600)
        _wait_ready(cluster, deadline=time.monotonic() + 300)
        cluster.timings["up_to_ready_s"] = time.monotonic() - t0
        api = cluster.containers("api")[0]
        url = cluster.podman("exec", api, "printenv", "HYBRIDREC_REDIS_URL").stdout.strip()
        assert url.startswith("redis+cluster://redis-node-1:6379,"), url

        answer = requests.get(cluster.url("/v1/users/1/recommendations?k=5"), timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["user_case"] == "known_with_features"
        assert answer.json()["strategy"] == "personalized"

        keys = {}
        for node in ("redis-node-1", "redis-node-2", "redis-node-3"):
            name = cluster.containers(node)[0]
            info = cluster.podman("exec", name, "redis-cli", "cluster", "info").stdout
            assert "cluster_state:ok" in info and "cluster_size:3" in info, info
            keys[node] = int(cluster.podman("exec", name, "redis-cli", "dbsize").stdout)
        cluster.notes["keys_per_master"] = keys
        assert all(n > 0 for n in keys.values()), keys  # the data is spread over all three
    except BaseException:
        print(cluster.logs(), file=sys.stderr)
        raise
    finally:
        _teardown(cluster, images=False)
