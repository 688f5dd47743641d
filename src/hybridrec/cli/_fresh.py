"""``retrain``: one cycle, or a loop on a schedule, with the quality gate."""

from __future__ import annotations

import json

import click

from ..errors import HybridrecError
from . import main
from ._env import Env
from ._model import _skipped_note


@main.command()
@click.option(
    "--every",
    default=None,
    metavar="INTERVAL",
    help="loop: run a cycle every INTERVAL (e.g. 90s, 15m, 2h) until SIGTERM",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.01, 0.5),
    default=0.1,
    show_default=True,
    help="share of newest interactions that champion and challenger are judged on",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1),
    default=None,
    help="relative regression allowed on precision@k and AUC "
    "[default: HYBRIDREC_GATE_TOLERANCE or 0.02]",
)
@click.option(
    "--warm-start/--full",
    default=False,
    show_default=True,
    help="continue from the champion instead of training from scratch",
)
@click.option("--warm-epochs", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="training threads [default: every core this process may use]",
)
@click.option("--seed", type=int, default=None)
@click.option("--max-cycles", type=click.IntRange(1), default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="one cycle: print its report as JSON")
@click.pass_obj
def retrain(
    env: Env,
    every,
    holdout,
    tolerance,
    warm_start,
    warm_epochs,
    k,
    threads,
    seed,
    max_cycles,
    as_json,
):
    """Train a challenger on the store's log; publish it only if it passes the gate."""
    from ..training.retrain import parse_interval, retrain_once, run_loop

    tol = env.settings.gate_tolerance if tolerance is None else tolerance

    def cycle():
        return retrain_once(
            env.feature_store,
            env.model_store,
            env.registry,
            params=env.settings.blend_params(),
            holdout=holdout,
            k=k,
            tolerance=tol,
            warm_start=warm_start,
            warm_epochs=warm_epochs,
            seed=seed,
            num_threads=threads,
            archive=env.archive,
            sample_users=env.settings.eval_users,
        )

    if every is None:
        result = cycle()
        note = _skipped_note(((result.report or {}).get("data") or {}).get("skipped_rows"))
        if note:
            click.echo(note, err=True)
        if as_json:
            click.echo(json.dumps(result.report))
            return
        click.echo(f"{result.status}: {result.version or '-'} (champion {result.champion})")
        for reason in result.reasons:
            click.echo(f"  {reason}")
        return
    try:
        interval = parse_interval(every)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    from ..logs import configure_logging

    configure_logging()  # the same JSON lines as hybridrec serve
    # a store that is down at start is a cycle failure like any other, not a crash
    n = run_loop(cycle, interval, max_cycles=max_cycles)
    if n == 0:
        raise HybridrecError("retrain loop ran no cycle")
