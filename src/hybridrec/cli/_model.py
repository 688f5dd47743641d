"""``train``, ``evaluate``, ``recommend``, ``similar`` and ``tune``."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import click

from ..errors import HybridrecError
from ..training.split import DEFAULT_TEST_SIZE, SPLIT_MODES
from . import main
from ._env import Env

LOSSES = ("warp", "bpr", "logistic", "warp-kos")


def _features_from_file(path: str) -> dict[str, dict[str, float]]:
    from ..io.files import read_features
    from ..model.hybrid import _coerce_features

    return _coerce_features(read_features(path))


def _features(env: Env, kind: str, path: str | None) -> dict[str, dict[str, float]]:
    """Features from ``path`` when given, else every entity of ``kind`` in the store."""
    if path:
        return _features_from_file(path)
    return dict(env.feature_store.iter_features(kind))


def _interactions(env: Env, path: str | None):
    """Interactions from ``path`` (a file, or a directory or fsspec URL of Parquet files),
    else the store's history: the log's Parquet archive plus the live log."""
    from ..io.files import read_interactions
    from ..store.log import read_interactions_dir, read_training_interactions

    if path:
        if "://" in path or Path(path).is_dir():
            return read_interactions_dir(path)
        return read_interactions(path)
    df = read_training_interactions(env.feature_store, env.archive)
    if len(df) == 0:
        raise HybridrecError(
            "the store's interaction log is empty: load some with "
            "'hybridrec interactions load FILE' or pass --interactions FILE"
        )
    return df


def _skipped_note(skipped: dict[str, int] | None) -> str | None:
    """One line on the rows skipped as unusable (``{reason: count}``), or None."""
    skipped = skipped or {}
    if not sum(skipped.values()):
        return None
    parts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items() if n)
    return f"skipped {sum(skipped.values())} unusable interaction rows: {parts}"


_threads_option = click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="training threads [default: every core this process may use]",
)


def _load_model(env: Env, version: str | None):
    """The model of ``version`` (a registry version or an artifact directory), or current."""
    from ..modelstore.artifact import load_model

    if version and Path(version, "manifest.json").exists():
        return load_model(version), version
    if version is None:
        version = env.registry.current()
        if version is None:
            raise HybridrecError(
                "no model is published yet: run 'hybridrec train --publish' "
                "(or pass --model VERSION)"
            )
    if not env.model_store.exists(version):
        raise HybridrecError(f"model version {version!r} is not in {env.settings.model_store}")
    return env.model_store.load(version), version


def _feature_options(command):
    """``--user-features`` and ``--item-features``: files instead of the feature store."""
    for side in ("item", "user"):
        command = click.option(
            f"--{side}-features",
            f"{side}_features_file",
            type=click.Path(dir_okay=False),
            help="id,feature[,weight]; default: the feature store",
        )(command)
    return command


_interactions_option = click.option(
    "--interactions",
    "interactions_file",
    metavar="FILE|DIR|URL",
    help="user_id,item_id[,weight][,timestamp]: a CSV/Parquet file, or a directory or "
    "fsspec URL of Parquet files (e.g. partitioned by day); default: the store's "
    "archive plus its log",
)


def _read_params(path: str) -> dict:
    from ..training.trainer import DEFAULT_PARAMS

    try:
        params = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HybridrecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise HybridrecError(f"{path}: expected a JSON object of hyperparameters")
    unknown = sorted(
        set(params)
        - set(DEFAULT_PARAMS)
        - {
            "k",
            "n",
            "rho",
            "epsilon",
            "item_alpha",
            "user_alpha",
            "max_sampled",
            "learning_schedule",
        }
    )
    if unknown:
        raise HybridrecError(f"{path}: unknown hyperparameters {unknown}")
    return params


@main.command()
@_interactions_option
@_feature_options
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None)
@click.option("--components", type=click.IntRange(1, 4096), default=None)
@click.option("--loss", type=click.Choice(LOSSES), default=None)
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--user-feature-weight", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--item-feature-weight", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--no-user-indicators", is_flag=True)
@click.option("--no-item-indicators", is_flag=True)
@click.option(
    "--item-item-weight",
    type=click.FloatRange(0),
    default=None,
    help="weight of the item-item part of the blend; 0: LightFM alone "
    "[default: HYBRIDREC_ITEM_ITEM_WEIGHT or 0.5]",
)
@click.option(
    "--params",
    "params_file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON hyperparameters, e.g. from 'hybridrec tune --save'; flags override",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 0.9),
    default=0.1,
    show_default=True,
    help="share of newest interactions to measure on before the final fit (0: skip)",
)
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@_threads_option
@click.option("--seed", type=int, default=None)
@click.option("--publish", is_flag=True, help="move the registry pointer to the new version")
@click.pass_obj
def train(
    env: Env,
    interactions_file,
    user_features_file,
    item_features_file,
    epochs,
    components,
    loss,
    learning_rate,
    user_feature_weight,
    item_feature_weight,
    no_user_indicators,
    no_item_indicators,
    item_item_weight,
    params_file,
    holdout,
    k,
    threads,
    seed,
    publish,
):
    """Train a model on the store's data (or files) and save it; print its version."""
    from tqdm import tqdm

    from ..training.trainer import DEFAULT_PARAMS, default_threads, train_model

    interactions = _interactions(env, interactions_file)
    user_features = _features(env, "users", user_features_file)
    item_features = _features(env, "items", item_features_file)
    params = env.settings.blend_params() | (_read_params(params_file) if params_file else {})
    params |= {
        key: value
        for key, value in {
            "epochs": epochs,
            "no_components": components,
            "loss": loss,
            "learning_rate": learning_rate,
            "user_feature_weight": user_feature_weight,
            "item_feature_weight": item_feature_weight,
            "item_item_weight": item_item_weight,
        }.items()
        if value is not None
    }
    if no_user_indicators:
        params["user_indicators"] = False
    if no_item_indicators:
        params["item_indicators"] = False
    n_epochs = params.get("epochs", DEFAULT_PARAMS["epochs"])
    threads = threads or default_threads()
    note = _skipped_note(interactions.attrs.get("skipped"))
    if note:
        click.echo(note, err=True)
    click.echo(
        f"training on {len(interactions)} interactions, {len(user_features)} users and "
        f"{len(item_features)} items with features, {threads} threads",
        err=True,
    )
    bars: dict[str, tqdm] = {}
    every = max(1, math.ceil(n_epochs / 10))

    def progress(stage: str, epoch: int, seconds: float, rate: float) -> None:
        label = "holdout fit" if stage == "holdout" else "final fit"
        if not sys.stderr.isatty():  # a log file: a few plain lines, no carriage returns
            if (epoch + 1) % every == 0 or epoch + 1 == n_epochs:
                click.echo(
                    f"{label}: epoch {epoch + 1}/{n_epochs}, {seconds:.2f} s, "
                    f"{rate:,.0f} interactions/s",
                    err=True,
                )
            return
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(
                total=n_epochs,
                desc=label,
                leave=True,
                bar_format="{desc}: {n_fmt}/{total_fmt} epochs |{bar}| {elapsed}{postfix}",
            )
        bar.update(1)
        bar.set_postfix_str(f"{seconds:.2f}s/epoch, {rate:,.0f} interactions/s")

    t0 = time.perf_counter()
    try:
        result = train_model(
            interactions,
            user_features,
            item_features,
            params,
            holdout=holdout,
            k=k,
            seed=seed,
            num_threads=threads,
            sample_users=env.settings.eval_users,
            callback=progress,
        )
    except ValueError as exc:
        raise HybridrecError(f"cannot train: {exc}") from None
    finally:
        for bar in bars.values():
            bar.close()
    from ..training.trainer import data_summary, throughput

    manifest = env.model_store.write(
        result.model,
        metrics=result.metrics or {},
        extra={
            "train_seconds": round(time.perf_counter() - t0, 3),
            "threads": threads,
            "throughput": throughput(result.model),
            "data": data_summary(interactions, interactions.attrs.get("last_id")),
        },
    )
    version = manifest["version"]
    info = {"status": "candidate", "metrics": result.metrics or {}}
    if publish:
        env.registry.publish(version, {**info, "status": "published"})
    else:
        env.registry.record(version, info)
    if result.metrics:
        from ..training.evaluation import format_table

        click.echo(format_table({**result.metrics, "model_version": version}), err=True)
    click.echo(f"{'published' if publish else 'saved'} model version", err=True)
    click.echo(version)


def _plot(result: dict, path: str) -> None:
    """Model vs popularity per segment to a PNG; segments left without users are left out
    (and named in the title), never drawn as empty bars."""
    from ..training.charts import metrics_chart

    model, baseline = result["segments"], result["baseline"]
    kept = [seg for seg, m in model.items() if m["users"]]
    title = f"model {result.get('model_version')} vs popularity"
    empty = [seg.replace("_", " ") for seg in model if seg not in kept]
    if empty:
        title += f"\nno test users left in: {', '.join(empty)}"
    png = metrics_chart(
        [
            ("model", {seg: model[seg] for seg in kept}),
            ("popularity", {seg: baseline[seg] for seg in kept}),
        ],
        ("precision", "recall", "ndcg", "auc"),
        result["k"],
        title,
    )
    try:
        Path(path).write_bytes(png)
    except OSError as exc:
        raise HybridrecError(f"cannot write {path}: {exc.strerror or exc}") from None


def _nothing_left(result: dict, test_file: str, test) -> str:
    """Why no test user is left to evaluate, and what to do."""
    dropped = result["segments"]["all"]["dropped"]["interactions"]
    n, users = len(test), test["user_id"].nunique()
    version = result.get("model_version")
    counts = ", ".join(
        f"{v:,} {reason}" for reason, v in sorted(dropped.items(), key=lambda x: -x[1]) if v
    )
    head = (
        f"nothing left to evaluate: the {n:,} interactions of {users:,} users in {test_file} "
        f"were all dropped ({counts})"
    )
    split_hint = (
        "make a proper split of your data and train on its training part only: "
        "'hybridrec split ALL.csv train.csv test.csv --by time' (or --by per-user, "
        "--by cold-users), 'hybridrec train --interactions train.csv --publish', then "
        "'hybridrec evaluate --test test.csv'"
    )
    seen, unknown = dropped.get("seen_in_training", 0), dropped.get("unknown_item", 0)
    if seen and seen >= unknown:
        return (
            f"{head}. The test file overlaps model {version}'s training data: a model is "
            "judged only on interactions it was not trained on, and these user-item pairs "
            f"were in its training data (seen_in_training). To measure it, {split_hint}"
        )
    if unknown:
        return (
            f"{head}. Their items are neither in model {version} nor scorable from item "
            "features in the store (unknown_item): check the ids, or load the items' "
            "features with 'hybridrec features load items FILE'"
        )
    if dropped.get("not_sampled"):
        return f"{head}. Evaluate more users: --sample-users 0 evaluates all of them"
    return f"{head}. {split_hint[0].upper()}{split_hint[1:]}"


@main.command()
@click.option(
    "--test",
    "test_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="held-out interactions: user_id,item_id[,weight][,timestamp]",
)
@click.option("--model", "version", default=None, help="version or artifact directory")
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@_feature_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--plot", type=click.Path(dir_okay=False), help="draw model vs baseline to a PNG")
@click.option(
    "--sample-users",
    type=click.IntRange(0),
    default=None,
    help="evaluate at most this many test users, a seeded sample with 95% intervals "
    "(0: all) [default: HYBRIDREC_EVAL_USERS or 5000]",
)
@click.pass_obj
def evaluate(
    env: Env,
    test_file,
    version,
    k,
    user_features_file,
    item_features_file,
    as_json,
    plot,
    sample_users,
):
    """Precision, recall, NDCG and AUC at k by segment, beside the popularity baseline.

    Each segment says how many test users and interactions it evaluated and why the others
    were not (--json: "interactions" and "dropped"); a test set that leaves nothing to
    evaluate (e.g. the training data itself) is an error. Make test sets with 'hybridrec
    split'.
    """
    from ..io.files import read_interactions
    from ..training.evaluation import evaluate as run
    from ..training.evaluation import format_table, json_safe

    test = read_interactions(test_file)
    model, version = _load_model(env, version)
    result = run(
        model,
        test,
        user_features=_features(env, "users", user_features_file),
        item_features=_features(env, "items", item_features_file),
        k=k,
        model_version=version,
        sample_users=env.settings.eval_users if sample_users is None else sample_users,
    )
    if as_json:  # printed even when nothing is left: it says what was dropped and why
        click.echo(json.dumps(json_safe(result)))
    if not result["segments"]["all"]["users"]:
        raise HybridrecError(_nothing_left(result, test_file, test))
    if plot:
        _plot(result, plot)
    if not as_json:
        click.echo(format_table(result))


@main.command()
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.argument("train_path", metavar="TRAIN", type=click.Path(dir_okay=False))
@click.argument("test_path", metavar="TEST", type=click.Path(dir_okay=False))
@click.option(
    "--by",
    type=click.Choice(SPLIT_MODES),
    default="time",
    show_default=True,
    help="time: one cut, the newest interactions are the test set; per-user: the newest "
    "share of each user's interactions; cold-users: a share of the users, all their "
    "interactions (users the model will not know)",
)
@click.option(
    "--test-size",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help=f"share held out: of interactions, or of users with --by cold-users "
    f"[default: {DEFAULT_TEST_SIZE}]",
)
@click.option(
    "--at",
    metavar="TIME",
    default=None,
    help="--by time: the test set is every interaction at or after TIME (unix seconds or "
    "ISO-8601, UTC when no offset is given); instead of --test-size",
)
@click.option("--seed", type=int, default=0, show_default=True, help="the draw of --by cold-users")
def split(path, train_path, test_path, by, test_size, at, seed):
    """Split the interactions of FILE into TRAIN and TEST files for 'evaluate'.

    CSV or Parquet (by extension), in the format 'interactions load' reads. The two files
    hold every interaction of FILE once (duplicate pairs merged, as every load merges
    them), none in both. Train a model on TRAIN, then 'hybridrec evaluate --test TEST'.
    """
    from ..io.files import file_kind, parse_timestamp, read_interactions, write_interactions
    from ..training.split import SplitError, split_frame

    names = {"FILE": path, "TRAIN": train_path, "TEST": test_path}
    resolved = {label: Path(p).resolve() for label, p in names.items()}
    for a, b in (("FILE", "TRAIN"), ("FILE", "TEST"), ("TRAIN", "TEST")):
        if resolved[a] == resolved[b]:
            raise click.UsageError(f"{a} and {b} are the same file ({names[a]}): give three paths")
    for out in (train_path, test_path):
        file_kind(out)  # an unsupported extension is refused before anything is written
    if at is not None:
        if by != "time":
            raise click.BadParameter(f"--at is for --by time, not --by {by}", param_hint="--at")
        if test_size is not None:
            raise click.UsageError("give --at or --test-size, not both")
        try:
            at = parse_timestamp(at)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--at") from None
    data = read_interactions(path)
    in_file_order = data.attrs.get("timestamps") == "row_order"
    if in_file_order:
        if at is not None:
            raise HybridrecError(
                f"{path} has no timestamp column, so there is no time to cut at: "
                "use --test-size (the newest are then the last rows of the file)"
            )
        if by != "cold-users":
            click.echo(
                f"{path} has no timestamp column: the newest interactions are the last rows",
                err=True,
            )
    if data.attrs.get("duplicates"):
        click.echo(f"merged {data.attrs['duplicates']:,} duplicate rows of {path}", err=True)
    try:
        train, test = split_frame(data, by, test_size=test_size, at=at, seed=seed)
    except SplitError as exc:
        raise HybridrecError(f"cannot split {path}: {exc}") from None
    if in_file_order:  # the row numbers read_interactions put there are not times
        train, test = train.drop(columns="timestamp"), test.drop(columns="timestamp")
    for frame, out in ((train, train_path), (test, test_path)):
        try:
            write_interactions(frame, out)
        except OSError as exc:
            raise HybridrecError(f"cannot write {out}: {exc.strerror or exc}") from None
    users, items = set(train["user_id"]), set(train["item_id"])
    test_users, test_items = set(test["user_id"]), set(test["item_id"])
    click.echo(
        f"train: {len(train):,} interactions of {len(users):,} users and {len(items):,} "
        f"items -> {train_path}"
    )
    click.echo(
        f"test:  {len(test):,} interactions of {len(test_users):,} users "
        f"({len(test_users - users):,} not in train) and {len(test_items):,} items "
        f"({len(test_items - items):,} not in train) -> {test_path}"
    )


def _snapshot(env: Env, model, version: str):
    """The snapshot the API would serve: the model's items plus the store's catalog."""
    from ..serving.reloader import sync_catalog
    from ..serving.snapshot import Snapshot

    return sync_catalog(Snapshot.from_model(model, version=version), env.feature_store)[0]


def _parse_feature(text: str) -> tuple[str, float]:
    name, sep, weight = text.partition("=")
    if not name:
        raise click.BadParameter(f"{text!r}: give NAME or NAME=WEIGHT")
    if not sep:
        return name, 1.0
    try:
        w = float(weight)
    except ValueError:
        raise click.BadParameter(f"{text!r}: weight {weight!r} is not a number") from None
    if not math.isfinite(w) or w < 0:
        raise click.BadParameter(f"{text!r}: weight must be a finite number >= 0")
    return name, w


@main.command()
@click.argument("user_id")
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--feature",
    "features",
    multiple=True,
    metavar="NAME[=W]",
    help="a feature of the user for this request (repeatable); replaces stored ones",
)
@click.option("--exclude", multiple=True, metavar="ITEM_ID", help="never recommend this item")
@click.option("--include-seen", is_flag=True, help="do not exclude items the user has seen")
@click.option("--model", "version", default=None, help="version or artifact directory")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def recommend(env: Env, user_id, k, features, exclude, include_seen, version, as_json):
    """Top-k items for USER_ID, as the API answers."""
    feats = dict(_parse_feature(f) for f in features) if features else None
    snap = _snapshot(env, *_load_model(env, version))
    stored, seen = env.feature_store.user_context(user_id)
    rec = snap.recommend(
        user_id,
        feats if feats is not None else (stored or {}),
        k,
        exclude=list(exclude) + ([] if include_seen else sorted(seen)),
        history=seen,
    )
    from ..serving.answers import SCORE_TYPES, add_metadata, score_type

    items = [{"item_id": i, "score": s} for i, s in rec.items]
    add_metadata(items, env.feature_store.metadata_of)
    body = {
        "user_id": user_id,
        "model_version": snap.version,
        "strategy": rec.strategy,
        "score_type": score_type(rec, snap),
        "user_case": rec.user_case,
        "items": items,
        "unscorable": rec.unscorable,
        "degraded": False,
    }
    if as_json:
        click.echo(json.dumps(body))
        return
    click.echo(f"user {user_id}: {body['user_case']} -> {body['strategy']} (model {snap.version})")
    click.echo(f"score: {body['score_type']}, {SCORE_TYPES[body['score_type']]}")
    _print_items(items)


def _print_items(items: list[dict]) -> None:
    """Rank, id, score and title (when the item has one), one line each."""
    for rank, item in enumerate(items, 1):
        title = f"  {item['title']}" if item.get("title") else ""
        click.echo(f"{rank:>4}  {item['item_id']:<12} {item['score']:>10.4f}{title}")


@main.command()
@click.argument("item_id")
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--model", "version", default=None, help="version or artifact directory")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def similar(env: Env, item_id, k, version, as_json):
    """Items nearest to ITEM_ID in the model's latent space (cosine)."""
    from ..serving.answers import add_metadata, presented
    from ..serving.snapshot import UnknownItem

    snap = _snapshot(env, *_load_model(env, version))
    try:
        items = [{"item_id": i, "score": s} for i, s in snap.similar(item_id, k)]
    except UnknownItem:
        raise HybridrecError(
            f"item {item_id!r} is neither in model {snap.version} nor scorable from its "
            "features in the store"
        ) from None
    (own,) = add_metadata(items, env.feature_store.metadata_of, [item_id])
    body = {
        "item_id": item_id,
        **presented(own),
        "model_version": snap.version,
        "score_type": "cosine",
        "items": items,
    }
    if as_json:
        click.echo(json.dumps(body))
        return
    title = f" ({body['title']})" if body.get("title") else ""
    click.echo(f"items like {item_id}{title}, by cosine of latent vectors (model {snap.version})")
    _print_items(items)


@main.command()
@_interactions_option
@_feature_options
@click.option(
    "--validation",
    type=click.FloatRange(0.01, 0.5),
    default=0.1,
    show_default=True,
    help="share of newest interactions used to compare candidates",
)
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@_threads_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--save", type=click.Path(dir_okay=False), help="write the best parameters (JSON)")
@click.pass_obj
def tune(
    env: Env,
    interactions_file,
    user_features_file,
    item_features_file,
    validation,
    k,
    threads,
    seed,
    save,
):
    """Compare a few candidate configurations on a validation split; print the best.

    Feed the saved parameters to 'hybridrec train --params FILE'.
    """
    from ..training.tune import tune as run

    interactions = _interactions(env, interactions_file)
    uf = _features(env, "users", user_features_file)
    itf = _features(env, "items", item_features_file)

    def show(params, metrics, score):
        seg = metrics["segments"]
        click.echo(
            f"uw={params['user_feature_weight']:<4} iw={params['item_feature_weight']:<4} "
            f"d={params['no_components']:<4} objective={score:.4f}  "
            + "  ".join(
                f"{s}={seg[s]['precision']:.4f}" for s in ("warm_users", "cold_users", "cold_items")
            ),
            err=True,
        )

    best, _ = run(
        interactions,
        uf,
        itf,
        validation=validation,
        k=k,
        seed=seed,
        num_threads=threads,
        sample_users=env.settings.eval_users,
        on_result=show,
    )
    text = json.dumps(best, indent=2, sort_keys=True)
    if save:
        Path(save).write_text(text + "\n", encoding="utf-8")
    click.echo(text)
