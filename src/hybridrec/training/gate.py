"""The quality gate: a challenger is published only if it does not regress."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GateDecision", "quality_gate", "GATE_METRICS", "GATE_SEGMENTS"]

GATE_METRICS = ("precision", "auc")
GATE_SEGMENTS = ("all", "cold_users")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]  # one line per regression (empty when passed)
    checks: list[dict]  # every comparison made


def quality_gate(challenger: dict, champion: dict | None, tolerance: float = 0.02) -> GateDecision:
    """Compare two ``evaluate()`` results on the same holdout.

    The challenger fails if, on any of ``GATE_SEGMENTS`` x ``GATE_METRICS``, it is more
    than ``tolerance`` (relative) below the champion. Segments without users, or metrics
    undefined on either side, are skipped. No champion: the challenger passes.
    """
    if champion is None:
        return GateDecision(True, [], [])
    reasons: list[str] = []
    checks: list[dict] = []
    for seg in GATE_SEGMENTS:
        new, old = challenger["segments"].get(seg), champion["segments"].get(seg)
        if not new or not old or not new["users"] or not old["users"]:
            continue
        for metric in GATE_METRICS:
            a, b = new[metric], old[metric]
            if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                continue
            floor = b * (1.0 - tolerance)
            ok = a >= floor
            checks.append(
                {
                    "segment": seg,
                    "metric": metric,
                    "challenger": a,
                    "champion": b,
                    "floor": floor,
                    "passed": ok,
                }
            )
            if not ok:
                reasons.append(
                    f"{seg} {metric}: challenger {a:.4f} < champion {b:.4f} "
                    f"- {tolerance:.0%} = {floor:.4f}"
                )
    return GateDecision(not reasons, reasons, checks)
