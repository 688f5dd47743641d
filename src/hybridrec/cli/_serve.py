"""``serve`` (the API under a production WSGI server) and ``demo`` (sample -> store ->
train -> serve)."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import time

import click

from ..errors import HybridrecError
from ..serving.server import DEFAULT_SERVER, SERVERS
from . import main
from ._env import Env

_server_options = [
    click.option("--host", default="127.0.0.1", show_default=True, help="address to bind"),
    click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True),
    click.option(
        "--workers",
        type=click.IntRange(1, 256),
        default=2,
        show_default=True,
        help="worker processes (about one per CPU core)",
    ),
    click.option(
        "--server",
        type=click.Choice(SERVERS),
        default=None,
        envvar="HYBRIDREC_SERVER",
        help=f"WSGI server (HYBRIDREC_SERVER) [default: {DEFAULT_SERVER}; gunicorn when "
        "HYBRIDREC_API_TOKEN is not ASCII, which granian cannot pass to the app]",
    ),
    click.option(
        "--threads",
        type=click.IntRange(1, 256),
        default=4,
        show_default=True,
        help="Python threads per worker: they overlap one request's Redis wait with "
        "another's scoring (gunicorn: 1 uses sync workers, more gthread workers)",
    ),
    click.option("--access-log", is_flag=True, help="log every request on stderr"),
]


def _with_server_options(func):
    for option in reversed(_server_options):
        func = option(func)
    return func


@main.command()
@_with_server_options
@click.pass_obj
def serve(
    env: Env,
    host: str,
    port: int,
    workers: int,
    server: str | None,
    threads: int,
    access_log: bool,
) -> None:
    """Serve the HTTP API (WORKERS processes, one BLAS thread each) until Ctrl-C/SIGTERM.

    Each worker loads the registry's current model before it takes requests (/readyz
    answers 503 while none is published) and follows new versions and catalog changes by
    itself. A dead worker is replaced; a dead embedded Redis is restarted.
    """
    from ..serving.server import check_port, choose_server
    from ..serving.server import serve as run

    server = choose_server(server, env.settings)
    check_port(host, port)

    def ready() -> None:
        click.echo(f"hybridrec API on http://{host}:{port} ({workers} {server} workers)", err=True)

    run(
        env.settings, host, port, workers, server=server, threads=threads,
        access_log=access_log, on_ready=ready,
    )  # fmt: skip


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that cleanups run."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command()
@_with_server_options
@click.option("--retrain", is_flag=True, help="train a new model even if one is published")
@click.option("--epochs", type=click.IntRange(1, 1000), default=None, help="training epochs")
@click.option(
    "--no-serve", is_flag=True, help="load, train and publish, print the examples, then exit"
)
@click.option(
    "--keep-redis",
    is_flag=True,
    help="leave the embedded Redis running when the demo stops (its data stays on disk either way)",
)
@click.pass_obj
def demo(
    env: Env,
    host: str,
    port: int,
    workers: int,
    server: str | None,
    threads: int,
    access_log: bool,
    retrain: bool,
    epochs: int | None,
    no_serve: bool,
    keep_redis: bool,
) -> None:
    """The main job on the bundled MovieLens sample: load it into the feature store,
    train, publish, and serve on http://HOST:PORT, printing requests to try.

    Ctrl-C or SIGTERM stops everything the demo started, the embedded Redis included
    (unless --keep-redis, or it was running before the demo).
    """
    from ..serving.server import check_port, choose_server
    from ..store.connection import EmbeddedServer

    server = choose_server(server, env.settings)
    if not no_serve:
        check_port(host, port)  # before any loading or training
    embedded = None if env.settings.redis_url else EmbeddedServer(env.settings.data_dir)
    ours = embedded is not None and not embedded.running()
    try:
        with _sigterm_interrupts():
            _demo(env, host, port, workers, server, threads, access_log, retrain, epochs,
                  no_serve, keep_redis=keep_redis or not ours)  # fmt: skip
    finally:
        env.close()
        if ours and not keep_redis and embedded.pid() is not None:
            embedded.stop()
            click.echo(
                f"stopped the embedded Redis (data kept in {embedded.data_dir}; "
                "--keep-redis leaves it running)",
                err=True,
            )


def _demo(env, host, port, workers, server, threads, access_log, retrain, epochs, no_serve,
          keep_redis: bool) -> None:  # fmt: skip
    from ..io.sample import load_sample

    store, registry = env.feature_store, env.registry
    sample = load_sample()
    t0 = time.perf_counter()
    store.load_features("users", sample.user_features, replace=True)
    store.load_features("items", sample.item_features, replace=True)
    store.load_metadata(sample.item_metadata, replace=True)
    if store.log_length() == 0:
        store.add_interactions(sample.interactions)
        loaded = f"{len(sample.interactions)} interactions"
    else:
        loaded = f"interactions already in the log ({store.log_length()})"
    click.echo(
        f"feature store: {sample.user_features['id'].nunique()} users and "
        f"{sample.item_features['id'].nunique()} items with features, "
        f"{len(sample.item_metadata)} titles, {loaded} "
        f"({time.perf_counter() - t0:.1f} s)",
        err=True,
    )
    version = registry.current()
    if version is None or retrain:
        version = _train_and_publish(env, epochs)
    else:
        click.echo(f"serving the published model {version} (--retrain for a new one)", err=True)
    model = env.model_store.load(version)
    examples = _examples(f"http://{host}:{port}", model, env.settings.api_token, store)
    if no_serve:
        click.echo(examples)
        return
    from ..serving.server import serve as run

    def ready() -> None:
        click.echo(
            f"\nhybridrec demo on http://{host}:{port} ({workers} {server} workers) serving "
            f"model {version} (/readyz turns 200 once the workers have loaded it). Try:\n",
            err=True,
        )
        click.echo(examples)
        click.echo(f"\nthe web console: http://{host}:{port}/", err=True)
        if keep_redis:
            click.echo("\nCtrl-C stops the server (the embedded Redis keeps running: "
                       "'hybridrec redis stop' stops it).", err=True)  # fmt: skip
        else:
            click.echo("\nCtrl-C stops the server and the embedded Redis.", err=True)

    run(
        env.settings, host, port, workers, server=server, threads=threads,
        access_log=access_log, on_ready=ready,
    )  # fmt: skip


def _train_and_publish(env: Env, epochs: int | None) -> str:
    from ..modelstore.registry import publish_model
    from ..training.trainer import data_summary, train_model

    store = env.feature_store
    interactions = store.read_interactions()
    user_features = dict(store.iter_features("users"))
    item_features = dict(store.iter_features("items"))
    params = env.settings.blend_params() | ({"epochs": epochs} if epochs else {})
    click.echo(f"training on {len(interactions)} interactions ...", err=True)
    t0 = time.perf_counter()
    try:
        result = train_model(
            interactions, user_features, item_features, params, holdout=0.1, seed=0,
            num_threads=2,
        )  # fmt: skip
    except ValueError as exc:
        raise HybridrecError(f"cannot train: {exc}") from None
    manifest = publish_model(
        env.model_store,
        env.registry,
        result.model,
        result.metrics or {},
        extra={
            "train_seconds": time.perf_counter() - t0,
            "data": data_summary(interactions, interactions.attrs.get("last_id")),
        },
    )
    metrics = (result.metrics or {}).get("segments", {}).get("all", {})
    summary = ", ".join(
        f"{k}={metrics[k]:.3f}" for k in ("precision", "ndcg", "auc") if k in metrics
    )
    click.echo(
        f"published model {manifest['version']} in {time.perf_counter() - t0:.1f} s"
        + (f" (holdout: {summary})" if summary else ""),
        err=True,
    )
    return manifest["version"]


def _examples(base: str, model, token: str | None, store) -> str:
    """curl commands that work against the demo's data when pasted, with the titles of
    what the example user rated and of the example item, to judge the answers by."""
    vocab = set(model.item_space_.vocabulary.external)
    users = model.user_space_.entities.external
    user = "1" if "1" in model.user_space_.entities else users[0]
    item = "1" if "1" in model.item_space_.entities else model.item_space_.entities.external[0]
    genres = [g for g in ("genre:Comedy", "genre:Romance") if g in vocab] or sorted(vocab)[:2]
    new_item = [g for g in ("genre:Animation", "genre:Children", "tag:pixar") if g in vocab]
    new_item = new_item or sorted(vocab)[:2]
    # the token itself is never printed: the command reads it from the environment
    auth = ' -H "Authorization: Bearer $HYBRIDREC_API_TOKEN"' if token else ""

    def send(method: str, path: str, body: str, write: bool = True) -> str:
        return (
            f"curl -s -X {method} {base}{path}{auth if write else ''} "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
        )

    new_user_body = json.dumps({"features": {g: 1 for g in genres}, "k": 5})
    item_body = json.dumps({"features": {f: 1 for f in new_item}})
    rated = sorted(store.get_seen(user), key=lambda i: (len(i), i))[:3]
    titles = store.metadata_of([*rated, item])
    named = [(m or {}).get("title") or i for i, m in zip([*rated, item], titles)]
    lines = [
        "# top 5 for a known user (features and seen items from the store); every item "
        "comes with its title",
        f"# user {user} rated e.g. {'; '.join(named[:-1]) or 'nothing yet'}",
        f"curl -s '{base}/v1/users/{user}/recommendations?k=5'",
        "# a visitor who just told us their interests",
        send("POST", "/v1/recommendations", new_user_body, write=False),
        "# a new item: recommendable within seconds, without retraining",
        send("PUT", "/v1/items/new-movie/features", item_body),
        f"curl -s '{base}/v1/items/new-movie/similar?k=5'",
        f"# movies like {item}: {named[-1]}",
        f"curl -s '{base}/v1/items/{item}/similar?k=5'",
        "# feedback: excluded from this user's next recommendations at once",
        send(
            "POST",
            "/v1/interactions",
            json.dumps({"interactions": [{"user_id": user, "item_id": "new-movie"}]}),
        ),
        f"curl -s {base}/v1/model",
        f"curl -s {base}/metrics | grep '^hybridrec_recommendations'",
    ]
    return "\n".join(lines)
