"""``features load|export``, ``interactions load|export``, ``metadata load|export``,
``models list|promote|rollback``, ``redis ...``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..errors import HybridrecError
from . import main
from ._env import Env


@main.group()
def features() -> None:
    """User and item features in the feature store."""


@features.command("load")
@click.argument("kind", type=click.Choice(["users", "items"]))
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--replace",
    is_flag=True,
    help="Each entity in FILE gets exactly FILE's features (its other stored features "
    "are dropped); entities absent from FILE are untouched. Default: merge.",
)
@click.pass_obj
def features_load(env: Env, kind: str, path: str, replace: bool) -> None:
    """Load FILE (CSV or Parquet, long format id,feature[,weight]) into the store.

    The whole file is checked first: a bad file changes nothing.
    """
    from ..io.files import read_features

    frame = read_features(path)  # validates everything before Redis is touched
    rows = env.feature_store.load_features(kind, frame, replace=replace)
    entities = frame["id"].nunique()
    merged = frame.attrs.get("duplicates", 0)
    click.echo(
        f"loaded {rows} features of {entities} {kind} "
        f"({'replaced' if replace else 'merged'}"
        f"{f', {merged} duplicate rows summed' if merged else ''}); "
        f"{env.feature_store.count(kind)} {kind} in the store"
    )


@features.command("export")
@click.argument("kind", type=click.Choice(["users", "items"]))
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.pass_obj
def features_export(env: Env, kind: str, path: str) -> None:
    """Write every stored feature of KIND to FILE (CSV or Parquet, by extension), in the
    format 'features load' reads: a backup, or a copy for another store."""
    import pandas as pd

    from ..io.files import write_features

    rows = [
        (entity_id, name, weight)
        for entity_id, feats in sorted(env.feature_store.iter_features(kind))
        for name, weight in sorted(feats.items())
    ]
    frame = pd.DataFrame(rows, columns=["id", "feature", "weight"])
    if frame.empty:
        raise HybridrecError(f"no {kind} with features in the store: nothing to export")
    _export(write_features, frame, path)
    click.echo(f"wrote {len(frame)} features of {frame['id'].nunique()} {kind} to {path}")


@main.group()
def interactions() -> None:
    """The interaction log in the feature store."""


@interactions.command("load")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.pass_obj
def interactions_load(env: Env, path: str) -> None:
    """Append FILE (user_id,item_id[,weight][,timestamp]) to the log and the seen sets.

    The whole file is checked first: a bad file changes nothing.
    """
    from ..io.files import read_interactions

    frame = read_interactions(path)
    if frame.attrs.get("timestamps") == "row_order":
        # row numbers are no time: the store stamps them now (in file order in the log)
        frame = frame.drop(columns="timestamp")
    added = env.feature_store.add_interactions(frame)
    click.echo(
        f"loaded {added} interactions of {frame['user_id'].nunique()} users and "
        f"{frame['item_id'].nunique()} items; the log holds {env.feature_store.log_length()}"
    )


@interactions.command("archive")
@click.option(
    "--retention",
    default=None,
    metavar="INTERVAL",
    help="keep log entries younger than this in Redis, e.g. 30d, 12h, 0 (archive all) "
    "[default: HYBRIDREC_LOG_RETENTION or 30d]",
)
@click.option(
    "--to",
    "url",
    default=None,
    metavar="DIR|URL",
    help="the archive: a directory or fsspec URL [default: HYBRIDREC_ARCHIVE or "
    ".hybridrec/archive]",
)
@click.option("--batch", type=click.IntRange(1), default=200_000, show_default=True)
@click.pass_obj
def interactions_archive(env: Env, retention: str | None, url: str | None, batch: int) -> None:
    """Move log entries older than the retention into Parquet files partitioned by day.

    Each batch is written, read back and compared, renamed into place, and only then
    trimmed from the log: a run killed at any point loses and duplicates nothing (run it
    again). Training reads the archive plus the log.
    """
    from ..store.log import Archive, archive_log
    from ..training.retrain import parse_interval

    text = retention or env.settings.log_retention
    try:
        seconds = 0.0 if text.strip() in ("0", "0s") else parse_interval(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention") from None
    archive = Archive(url or env.settings.archive_url)
    older_than_ms = int((time.time() - seconds) * 1000)
    result = archive_log(
        env.feature_store,
        archive,
        older_than_ms=older_than_ms,
        batch=batch,
        on_batch=lambda n, last: click.echo(f"archived {n} entries, up to {last}", err=True),
    )
    click.echo(
        f"archived {result.archived} log entries in {result.files} files to {archive.url}"
        f" (archive holds entries up to {result.cursor or 'none'}); "
        f"the log holds {env.feature_store.log_length()}"
    )


@interactions.command("export")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.pass_obj
def interactions_export(env: Env, path: str) -> None:
    """Write the interaction log to FILE (CSV or Parquet, by extension), oldest first, in
    the format 'interactions load' reads (user_id,item_id,weight,timestamp)."""
    from ..io.files import write_interactions

    frame = env.feature_store.read_interactions().drop(columns=["log_ms", "log_seq"])
    if frame.empty:
        raise HybridrecError("the interaction log is empty: nothing to export")
    _export(write_interactions, frame, path)
    click.echo(f"wrote {len(frame)} interactions to {path}")


def _export(write, frame, path: str) -> None:
    """``write(frame, path)``, a file system error becoming one clear line."""
    try:
        write(frame, path)
    except OSError as exc:
        raise HybridrecError(f"cannot write {path}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------ metadata


@main.group()
def metadata() -> None:
    """Item metadata (titles, ...): returned with recommendations, never used to score."""


@metadata.command("load")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--replace",
    is_flag=True,
    help="Each item in FILE gets exactly FILE's fields (its other fields are dropped); "
    "items absent from FILE are untouched. Default: merge.",
)
@click.pass_obj
def metadata_load(env: Env, path: str, replace: bool) -> None:
    """Load FILE (CSV or Parquet: an id column and one column per field, e.g. id,title).

    The whole file is checked first: a bad file changes nothing.
    """
    from ..io.metadata import read_metadata

    frame = read_metadata(path)
    n = env.feature_store.load_metadata(frame, replace=replace)
    fields = ", ".join(c for c in frame.columns if c != "id")
    click.echo(
        f"loaded {fields} of {n} items ({'replaced' if replace else 'merged'}); "
        f"{env.feature_store.metadata_count()} items with metadata in the store"
    )


@metadata.command("export")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.pass_obj
def metadata_export(env: Env, path: str) -> None:
    """Write every item's metadata to FILE (CSV or Parquet), as 'metadata load' reads it."""
    import pandas as pd

    from ..io.metadata import write_metadata

    rows = [{"id": i, **meta} for i, meta in sorted(env.feature_store.iter_metadata())]
    if not rows:
        raise HybridrecError("no item metadata in the store: nothing to export")
    frame = pd.DataFrame(rows).astype(object)
    _export(write_metadata, frame, path)
    click.echo(f"wrote the metadata of {len(frame)} items to {path}")


# -------------------------------------------------------------------------------- models


@main.group()
def models() -> None:
    """Model versions: list them, promote one, roll back."""


def _metrics_summary(metrics: Any) -> str:
    if not isinstance(metrics, dict) or not metrics:
        return ""
    overall = metrics.get("segments", {}).get("all") if "segments" in metrics else None
    if isinstance(overall, dict):
        k = metrics.get("k", "k")
        names = (("precision", f"p@{k}"), ("recall", f"r@{k}"), ("ndcg", "ndcg"), ("auc", "auc"))
        return " ".join(f"{label}={overall[n]:.4f}" for n, label in names if n in overall)
    flat = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))]
    return " ".join(f"{k}={v:.4g}" for k, v in flat[:4])


def _holdout_label(metrics: Any) -> str:
    """What a version's metrics were measured on, e.g. "newest 10%, 10,001 interactions"."""
    holdout = metrics.get("holdout") if isinstance(metrics, dict) else None
    if not isinstance(holdout, dict):
        return ""
    n = holdout.get("interactions")
    if "rule" in holdout:
        where = str(holdout["rule"])
    elif "fraction" in holdout:
        where = f"newest {holdout['fraction']:.0%}"
    else:
        return ""
    return f"on {where}" + (f", {n:,} interactions" if isinstance(n, int) else "")


def _when(entry: dict) -> str:
    """When a version was recorded, as UTC ISO time (the registry keeps unix seconds)."""
    stamp = entry.get("created_at") or entry.get("recorded_at")
    if isinstance(stamp, int | float):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    return str(stamp or "")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list with every field.")
@click.pass_obj
def models_list(env: Env, as_json: bool) -> None:
    """Versions in the registry (and whole artifacts it has not recorded), oldest first."""
    listed = env.registry.versions()
    known = {v["version"] for v in listed}
    stored = set(env.model_store.versions())
    for entry in listed:
        entry["artifact"] = entry["version"] in stored
    listed += [
        {"version": v, "status": "unregistered", "current": False, "artifact": True}
        for v in sorted(stored - known)
    ]
    if as_json:
        click.echo(json.dumps(listed, indent=2, sort_keys=True, default=str))
        return
    if not listed:
        click.echo("no model versions yet: run 'hybridrec train --publish'")
        return
    click.echo(f"  {'VERSION':<26}{'STATUS':<14}{'CREATED':<22}METRICS (HOLDOUT)")
    holdouts = set()
    for e in listed:
        mark = "*" if e.get("current") else " "
        status = e["status"] + ("" if e.get("artifact") else " (no artifact)")
        summary = _metrics_summary(e.get("metrics"))
        label = _holdout_label(e.get("metrics")) if summary else ""
        if summary:
            holdouts.add(label)
        click.echo(
            f"{mark} {e['version']:<26}{status:<14}{_when(e):<22}"
            f"{summary}{f'  {label}' if label else ''}".rstrip()
        )
    if len(holdouts) > 1:
        click.echo(
            "metrics measured on different holdouts are not comparable: compare versions on "
            "one file with 'hybridrec evaluate --test FILE --model VERSION'"
        )


@models.command("promote")
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even a version the quality gate refused.")
@click.pass_obj
def models_promote(env: Env, version: str, force: bool) -> None:
    """Make VERSION current (its artifact is verified first)."""
    from ..modelstore.registry import promote_model

    generation = promote_model(env.model_store, env.registry, version, force=force)
    _mark_if_data_unknown(env, version)
    click.echo(f"current model version: {version} (generation {generation})")


def _mark_if_data_unknown(env: Env, version: str) -> None:
    """A model that does not record its training data is judged by ``retrain`` only on
    interactions logged after this moment (it was trained before)."""
    from ..training.retrain import mark_unseen_from_now, trained_on

    if not trained_on(env.model_store.manifest(version)):
        mark_unseen_from_now(env.feature_store, env.registry, version)


@models.command("rollback")
@click.pass_obj
def models_rollback(env: Env) -> None:
    """Move back to the version that was current before this one."""
    from ..modelstore.registry import rollback_model

    before = env.registry.current()
    version = rollback_model(env.model_store, env.registry)
    _mark_if_data_unknown(env, version)
    click.echo(f"rolled back from {before} to {version}")


# --------------------------------------------------------------------------------- redis


@main.group("redis")
def redis_group() -> None:
    """The embedded Redis server (used when no --redis-url is given)."""


def _embedded(env: Env):
    from ..store.connection import EmbeddedServer, redact_url

    if env.settings.redis_url is not None:
        raise HybridrecError(
            f"--redis-url / HYBRIDREC_REDIS_URL is set ({redact_url(env.settings.redis_url)}): "
            "hybridrec manages only its embedded Redis; unset it to manage that one"
        )
    return EmbeddedServer(env.settings.data_dir)


@redis_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def redis_status(env: Env, as_json: bool) -> None:
    """Is the embedded server running? Pid, socket, keys, memory."""
    if env.settings.redis_url is not None:
        from ..store.connection import redact_url

        info = env.redis.info("server")
        status: dict[str, Any] | None = {
            "state": "reachable",
            "url": redact_url(env.settings.redis_url),
            "version": info.get("redis_version"),
        }
    else:
        status = _embedded(env).status()
    if as_json:
        click.echo(json.dumps(status))
    elif status is None:
        click.echo(f"embedded Redis: not running (data in {_embedded(env).data_dir})")
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in status.items()))


@redis_group.command("start")
@click.pass_obj
def redis_start(env: Env) -> None:
    """Start the embedded server in the background (commands start it when needed)."""
    server = _embedded(env)
    server.start()
    click.echo(f"embedded Redis running (pid {server.pid()}, socket {server.socket_path})")


@redis_group.command("stop")
@click.pass_obj
def redis_stop(env: Env) -> None:
    """Save the data and stop the embedded server (other processes lose it too)."""
    server = _embedded(env)
    if server.stop():
        click.echo(f"embedded Redis stopped; data kept in {server.data_dir}")
    else:
        click.echo("embedded Redis was not running")
