"""One retraining cycle, and the loop that runs it on a schedule.

A cycle reads the interaction log and features from the store, holds out what the
champion cannot have been trained on (the log entries appended after the ones it was
trained on; for a champion trained from a file, the interactions newer than its newest
timestamp; for a champion that records neither, the entries logged after retraining or
``models promote`` first met it, and until there are enough of those the cycle is
skipped; the newest ``holdout`` share when there is no champion), fits a challenger on
the rest, evaluates challenger and champion on that same holdout, writes the challenger
with a report (JSON + PNG), and publishes it only if it passes the quality gate. A
refused challenger stays in the model store, marked ``refused`` in the registry.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import HybridrecError
from ..store.log import newer_than, parse_cursor, read_training_interactions
from .charts import metrics_chart
from .evaluation import DEFAULT_SAMPLE_USERS, evaluate, json_safe
from .gate import GateDecision, quality_gate
from .split import time_holdout
from .trainer import (
    DEFAULT_PARAMS,
    data_summary,
    default_threads,
    fit_model,
    split_params,
    throughput,
    with_blend,
)

__all__ = [
    "CycleResult",
    "UNSEEN_AFTER",
    "mark_unseen_from_now",
    "parse_interval",
    "render_chart",
    "retrain_once",
    "run_loop",
    "trained_on",
]

log = logging.getLogger("hybridrec.retrain")


@dataclass
class CycleResult:
    status: str  # "published" | "refused" | "skipped"
    version: str | None = None
    champion: str | None = None
    reasons: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def parse_interval(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"2h"`` or ``"1d"``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m:
        raise ValueError(f"{text!r} is not an interval: use e.g. 90s, 15m, 2h")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if value <= 0:
        raise ValueError(f"{text!r}: the interval must be positive")
    return value


def render_chart(report: dict) -> bytes:
    """PNG bytes: precision@k and AUC by segment for champion, challenger and popularity,
    all measured on the cycle's holdout."""
    challenger = report["challenger"]["metrics"]
    series = [("challenger", challenger["segments"])]
    if report.get("champion"):
        series.insert(0, ("champion", report["champion"]["metrics"]["segments"]))
    series.append(("popularity", challenger["baseline"]))
    holdout = report.get("holdout") or {}
    title = f"cycle {report['started_at']}: {report['decision']['status']}"
    if holdout:
        title += f"\nholdout: {holdout['rule']}, {holdout['interactions']:,} interactions"
    return metrics_chart(series, ("precision", "auc"), report["k"], title)


UNSEEN_AFTER = "unseen_after"
"""Registry field of a model whose manifest does not say what it was trained on: the log
cursor after which every entry is certainly unseen by it (recorded when it was promoted
or first met by a retraining cycle; it had been trained by then)."""


def trained_on(manifest: dict) -> dict:
    """What a model's manifest records of its training data (``data_summary``), or ``{}``."""
    data = (manifest.get("extra") or {}).get("data") or {}
    known = data.get("log_last_id") or data.get("max_timestamp") is not None
    return data if known else {}


def mark_unseen_from_now(feature_store, registry, version: str, cursor: str | None = None) -> str:
    """Record that log entries after ``cursor`` (default: the newest now) are unseen by
    ``version``, a model that does not record its training data; keep an earlier mark.

    Returns the cursor in force.
    """
    mark = (registry.info(version) or {}).get(UNSEEN_AFTER)
    if mark:
        return mark
    cursor = cursor or feature_store.log_cursor()
    registry.record(version, {UNSEEN_AFTER: cursor})
    return cursor


def _unseen_by_champion(feature_store, interactions, seen_data: dict, mark, log_last_id):
    """``(older, newest, rule)`` with ``newest`` what the champion cannot have been trained
    on: the log entries after the last one it read (or after its registry mark), and of
    those, when its newest timestamp is known, only the newer ones (a log rebuilt from a
    backup has new entry ids but the old timestamps). None when nothing is known (the
    caller marks it and skips)."""
    since = seen_data.get("log_last_id") or mark
    cutoff = seen_data.get("max_timestamp")
    if not since and cutoff is None:
        return None
    unseen = np.ones(len(interactions), dtype=bool)
    rules = []
    if since:
        # entry ids travel with the rows (archive and log alike): no second read of the log
        unseen &= newer_than(interactions, parse_cursor(since))
        rules.append(
            "log entries after the champion's data"
            if seen_data.get("log_last_id")
            else f"log entries after {mark}, when its training data was unknown"
        )
    if cutoff is not None:
        unseen &= interactions["timestamp"].to_numpy() > cutoff
        rules.append("newer than its newest" if rules else "newer than the champion's data")
    older = interactions[~unseen].reset_index(drop=True)
    return older, interactions[unseen].reset_index(drop=True), ", ".join(rules)


def retrain_once(
    feature_store,
    model_store,
    registry,
    *,
    params: dict | None = None,
    holdout: float = 0.1,
    k: int = 10,
    tolerance: float = 0.02,
    warm_start: bool = False,
    warm_epochs: int = 5,
    min_interactions: int = 10,
    min_new_share: float = 0.01,
    seed: int | None = None,
    num_threads: int | None = None,
    archive=None,
    sample_users: int | None = DEFAULT_SAMPLE_USERS,
) -> CycleResult:
    """Run one cycle; see the module docstring. Interactions: ``archive`` (the log's
    :class:`~hybridrec.store.log.Archive`, or None) plus the live log; rows training
    cannot use are skipped and counted in the report's ``data.skipped_rows``."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.perf_counter()
    num_threads = num_threads or default_threads()
    interactions = read_training_interactions(feature_store, archive)
    skipped = interactions.attrs.get("skipped") or {}
    if sum(skipped.values()):
        log.warning("retrain: skipped unusable log rows: %s", skipped)
    if len(interactions) < min_interactions:
        log.info("retrain: skipped, %d interactions in the log", len(interactions))
        return CycleResult("skipped", reasons=[f"only {len(interactions)} interactions"])
    user_features = dict(feature_store.iter_features("users"))
    item_features = dict(feature_store.iter_features("items"))

    log_last_id = interactions.attrs.get("last_id")

    champion_version = registry.current()
    champion = None
    if champion_version is None:
        older, newest = time_holdout(interactions, holdout)
        rule = f"newest {holdout:.0%}"
    else:
        # champion and challenger are judged on the same holdout, one the champion cannot
        # have been trained on: never its own training data
        champion = model_store.load(champion_version, with_optimizer=warm_start)
        mark = (registry.info(champion_version) or {}).get(UNSEEN_AFTER)
        split = _unseen_by_champion(
            feature_store, interactions, trained_on(champion.manifest_), mark, log_last_id
        )
        if split is None:
            cursor = mark_unseen_from_now(feature_store, registry, champion_version, log_last_id)
            return _skip(
                champion_version,
                f"{champion_version} does not record what it was trained on: it will be "
                f"judged only on interactions logged after entry {cursor} (none yet)",
            )
        older, newest, rule = split
        needed = max(min_interactions, int(min_new_share * len(interactions)))
        if len(newest) < needed:
            return _skip(
                champion_version,
                f"{len(newest)} new interactions since {champion_version}, need {needed}",
            )
        if len(older) == 0:
            return _skip(champion_version, "no interactions left to train a challenger on")
    merged = {
        **DEFAULT_PARAMS,
        **(champion.get_params() if champion else {}),
        **(getattr(champion, "blend_params_", None) or {}),
        **(params or {}),
    }
    merged.pop("random_state", None)
    _, blend_params = split_params(merged)

    def challenger_on(data):
        if warm_start and champion is not None:
            # LightFM continues from the champion; the item-item part is refitted
            model = champion.warm_start(
                data, user_features, item_features, epochs=warm_epochs, num_threads=num_threads
            )
            return with_blend(model, blend_params)
        return fit_model(
            data, user_features, item_features, merged, seed=seed, num_threads=num_threads
        )

    probe = challenger_on(older)
    challenger_metrics = evaluate(
        probe,
        newest,
        user_features=user_features,
        item_features=item_features,
        k=k,
        sample_users=sample_users,
    )
    champion_metrics = (
        evaluate(
            champion,
            newest,
            user_features=user_features,
            item_features=item_features,
            k=k,
            model_version=champion_version,
            sample_users=sample_users,
        )
        if champion is not None
        else None
    )
    measured_on = {"rule": rule, "interactions": len(newest)}
    for metrics in (challenger_metrics, champion_metrics):
        if metrics is not None:
            metrics["holdout"] = measured_on  # shown by 'models list' beside the numbers
    decision: GateDecision = quality_gate(challenger_metrics, champion_metrics, tolerance)
    final = challenger_on(interactions)
    fit_cost = throughput(final)
    status = "published" if decision.passed else "refused"
    report = {
        "started_at": started,
        "k": k,
        "holdout": measured_on,
        "data": data_summary(interactions, log_last_id),
        "mode": "warm_start" if warm_start and champion is not None else "full",
        "threads": num_threads,
        "throughput": fit_cost,
        "params": merged,
        "challenger": {"metrics": challenger_metrics},
        "champion": (
            {"version": champion_version, "metrics": champion_metrics} if champion else None
        ),
        "decision": {
            "status": status,
            "tolerance": tolerance,
            "reasons": decision.reasons,
            "checks": decision.checks,
        },
    }
    report = json_safe(report)
    manifest = model_store.write(
        final,
        metrics=report["challenger"]["metrics"],
        extra={"data": report["data"], "mode": report["mode"], "throughput": fit_cost},
    )
    version = manifest["version"]
    report["challenger"]["version"] = version
    report["seconds"] = round(time.perf_counter() - t0, 3)
    model_store.write_report(version, "report.json", json.dumps(report, indent=2).encode())
    model_store.write_report(version, "report.png", render_chart(report))
    info = {
        "status": status,
        "metrics": report["challenger"]["metrics"],
        "reasons": decision.reasons,
    }
    if decision.passed:
        registry.publish(version, info)
    else:
        registry.record(version, info)
    log.info(
        "retrain: %s %s (champion %s) in %.1fs%s",
        status,
        version,
        champion_version,
        report["seconds"],
        "; " + "; ".join(decision.reasons) if decision.reasons else "",
    )
    return CycleResult(status, version, champion_version, decision.reasons, report)


def _skip(champion_version: str, reason: str) -> CycleResult:
    log.info("retrain: skipped, %s", reason)
    return CycleResult("skipped", champion=champion_version, reasons=[reason])


def run_loop(
    cycle: Callable[[], CycleResult],
    every: float,
    *,
    stop: threading.Event | None = None,
    max_cycles: int | None = None,
    install_signals: bool = True,
) -> int:
    """Run ``cycle`` every ``every`` seconds until SIGTERM/SIGINT (or ``stop`` is set).

    A failing cycle (Redis down, a file error, a bad artifact) is logged and the loop goes
    on. Returns the number of cycles run.
    """
    stop = stop or threading.Event()
    if install_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
    n = 0
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            result = cycle()
            log.info("cycle %d: %s %s", n + 1, result.status, result.version or "")
        except (HybridrecError, OSError, ValueError) as exc:
            log.error("cycle %d failed: %s", n + 1, exc)
        except Exception as exc:  # the loop must outlive any one cycle
            if exc.__class__.__module__.startswith("redis"):
                log.error("cycle %d failed: Redis: %s", n + 1, exc)
            else:
                log.exception("cycle %d failed unexpectedly", n + 1)
        n += 1
        if max_cycles is not None and n >= max_cycles:
            break
        stop.wait(max(0.0, every - (time.monotonic() - t0)))
    log.info("retrain loop stopped after %d cycles", n)
    return n
