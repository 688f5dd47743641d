"""Which WSGI server for ``hybridrec serve``: req/s and latency, bare Flask and hybridrec.

Servers (2 worker processes each, BLAS pinned to one thread per worker):

- ``gunicorn-sync``: gunicorn sync workers (no keep-alive: a connection per request);
- ``gunicorn-gthread``: gunicorn gthread workers, 4 threads each, keep-alive;
- ``granian``: granian's WSGI interface, one Python thread per worker (``granian-2t``,
  ``granian-4t``: two, four);
- ``uwsgi``: uWSGI (the ``pyuwsgi`` wheel), prefork with a master, ``--http11-socket``
  (HTTP/1.1 with keep-alive straight to the workers), ``--lazy-apps``.

Apps: ``bare`` (a Flask endpoint on the recommendation route returning a constant JSON
body: the server's ceiling) and ``hybridrec`` (the real API on the bundled MovieLens
sample, trained with ``hybridrec demo --no-serve``, on the embedded Redis; random known
users, ``k=10``, seen items excluded). gunicorn and granian run through
:func:`hybridrec.serving.server.run_app` (``hybridrec serve --server ...`` for hybridrec);
uWSGI through the same worker start-up (:class:`hybridrec.serving.server._WorkerApp`).

Each round starts every (app, server) pair in turn, the servers' order rotated from one
round to the next, and drives it with ``wrk`` (``--connections``, ``--wrk-threads``) for
a warm-up and then ``--duration`` seconds; the table gives the medians over rounds and
the ratio to gunicorn-sync. The machine's load average is printed before and after.

Run: ``python benchmarks/bench_server.py`` (about 8 minutes; ``apt-get install wrk``,
``pip install granian pyuwsgi``). ``--quick``: 1 round of 3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
# the same bare endpoint and the same measures as bench_serving
from bench_serving import Result, _free_port, _get, bare_app, wrk  # noqa: E402

# name -> (server, Python threads per worker)
SPECS = {
    "gunicorn-sync": ("gunicorn", 1),
    "gunicorn-gthread": ("gunicorn", 4),
    "granian": ("granian", 1),
    "granian-2t": ("granian", 2),
    "granian-4t": ("granian", 4),
    "uwsgi": ("uwsgi", 1),
}
SERVERS = ("gunicorn-sync", "gunicorn-gthread", "granian", "granian-4t", "uwsgi")
APPS = ("bare", "hybridrec")
N_USERS = 610  # the bundled sample's users are "1".."610"


# -- the apps --------------------------------------------------------------------------------


def hybridrec_app():
    """hybridrec's worker app from the environment (the server's embedded Redis socket)."""
    from hybridrec.config import Settings
    from hybridrec.serving.server import READY_TIMEOUT, _hybridrec_app

    return _hybridrec_app(Settings.from_env(), READY_TIMEOUT)


FACTORIES = {"bare": bare_app, "hybridrec": hybridrec_app}


def run_server(app: str, server: str, port: int, workers: int) -> None:
    """The child process of one measurement: ``app`` under ``server`` until SIGTERM."""
    from hybridrec.serving.server import run_app

    factory = FACTORIES[app]
    if server == "uwsgi":
        import pyuwsgi

        from hybridrec.serving.server import BLAS_ENV

        os.environ.update({name: "1" for name in BLAS_ENV}, BENCH_SERVER_APP=app)
        pyuwsgi.run(
            [
                "--master", "--processes", str(workers), "--http11-socket",
                f"127.0.0.1:{port}", "--lazy-apps", "--wsgi-file", str(HERE),
                "--callable", "application", "--die-on-term", "--disable-logging",
                "--need-app", "--listen", "1024",
            ]
        )  # fmt: skip
        return
    name, threads = SPECS[server]
    run_app(factory, "127.0.0.1", port, workers, server=name, threads=threads)


if os.environ.get("BENCH_SERVER_APP"):  # imported by a uWSGI worker (--lazy-apps)
    from hybridrec.serving.server import _WorkerApp

    application = _WorkerApp(FACTORIES[os.environ["BENCH_SERVER_APP"]])()


# -- measuring -------------------------------------------------------------------------------


def measure(app: str, server: str, env: dict, root: Path, args) -> Result:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    if app == "hybridrec" and server != "uwsgi":
        name, threads = SPECS[server]
        command = [str(Path(sys.executable).parent / "hybridrec"), "serve", "--server", name]
        command += ["--threads", str(threads)]
        command += ["--port", str(port), "--workers", str(args.workers)]
    else:
        command = [sys.executable, str(HERE), "--run", app, "--server", server]
        command += ["--port", str(port), "--workers", str(args.workers)]
    log = open(root / f"{app}-{server}.log", "ab")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=root)
    try:
        deadline = time.monotonic() + 120
        probe = f"{base}/v1/users/1/recommendations?k=10"
        while sum(_get(probe)[0] == 200 for _ in range(6)) < 6:  # every worker answers
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} under {server} did not start; see {log.name}")
            time.sleep(0.2)
        wrk(base, N_USERS, args.warmup, args.connections, args.wrk_threads, user="", first=1)
        return wrk(
            base, N_USERS, args.duration, args.connections, args.wrk_threads, user="", first=1
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def prepare(root: Path, epochs: int) -> dict:
    """Sample -> embedded Redis -> train -> publish; the environment of every server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    exe = str(Path(sys.executable).parent / "hybridrec")
    demo = [exe, "demo", "--no-serve", "--keep-redis", "--epochs", str(epochs)]
    subprocess.run(demo, env=env, cwd=root, check=True, capture_output=True)
    from hybridrec.store.connection import EmbeddedServer

    env["HYBRIDREC_DATA_DIR"] = str(root / ".hybridrec")
    env["HYBRIDREC_MODEL_STORE"] = str(root / ".hybridrec" / "models")
    # uWSGI's workers get the socket as a URL, as hybridrec serve's workers do
    socket_path = EmbeddedServer(root / ".hybridrec").start()
    metrics = root / "uwsgi-metrics"
    metrics.mkdir()
    env_uwsgi = dict(
        env, HYBRIDREC_REDIS_URL=f"unix://{socket_path}", PROMETHEUS_MULTIPROC_DIR=str(metrics)
    )
    return {"serve": env, "uwsgi": env_uwsgi}


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the model")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s")
    parser.add_argument("--run", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--server", choices=SPECS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_server(args.run, args.server, args.port, args.workers)
        return
    if shutil.which("wrk") is None:
        sys.exit("this benchmark drives load with wrk: apt-get install -y wrk")
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    servers, apps = args.servers.split(","), args.apps.split(",")
    print(
        f"{os.cpu_count()} CPUs, load average {_load()}; {args.workers} workers per server; "
        f"wrk {args.wrk_threads} threads, {args.connections} connections, {args.duration:.0f} s "
        f"per run, {args.rounds} rounds",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="hybridrec-bench-server-"))
    results: dict[tuple[str, str], list[Result]] = {}
    try:
        envs = prepare(root, args.epochs) if "hybridrec" in apps else {"serve": dict(os.environ)}
        for n in range(args.rounds):
            order = servers[n % len(servers) :] + servers[: n % len(servers)]
            for app in apps:
                for server in order:
                    env = envs["uwsgi" if server == "uwsgi" and app == "hybridrec" else "serve"]
                    r = measure(app, server, env, root, args)
                    results.setdefault((app, server), []).append(r)
                    print(
                        f"  round {n + 1} {app:9s} {server:16s} {r.rps:8.0f} req/s  "
                        f"p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  errors {r.errors}  "
                        f"(load {_load()})",
                        flush=True,
                    )
    finally:
        from hybridrec.store.connection import EmbeddedServer

        EmbeddedServer(root / ".hybridrec").stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nload average after: {_load()}")
    print("\n| app | server | req/s | min-max | p50 ms | p99 ms | errors | vs gunicorn-sync |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for app in apps:
        ref = results.get((app, "gunicorn-sync"))
        ref_rps = statistics.median(r.rps for r in ref) if ref else None
        for server in servers:
            rs = results[(app, server)]
            rps = statistics.median(r.rps for r in rs)
            ratio = f"{rps / ref_rps:.2f}x" if ref_rps else "-"
            print(
                f"| {app} | {server} | {rps:.0f} | {min(r.rps for r in rs):.0f}-"
                f"{max(r.rps for r in rs):.0f} | {statistics.median(r.p50_ms for r in rs):.2f} | "
                f"{statistics.median(r.p99_ms for r in rs):.2f} | {sum(r.errors for r in rs)} | "
                f"{ratio} |"
            )


if __name__ == "__main__":
    main()
