"""Bar charts of evaluation results (PNG), for ``evaluate --plot`` and retrain reports.

matplotlib is a regular dependency; it is imported here, on first use, with the
non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

__all__ = ["metrics_chart", "metrics_figure"]

_TITLES = {"precision": "precision@{k}", "recall": "recall@{k}", "ndcg": "NDCG@{k}", "auc": "AUC"}


def metrics_chart(
    series: Sequence[tuple[str, dict]], metrics: Sequence[str], k: int, title: str
) -> bytes:
    """PNG bytes of :func:`metrics_figure`."""
    import matplotlib.pyplot as plt

    fig = metrics_figure(series, metrics, k, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def metrics_figure(series: Sequence[tuple[str, dict]], metrics: Sequence[str], k: int, title: str):
    """A matplotlib Figure: one panel per metric, one group of bars per segment, one bar
    per series.

    ``series``: ``(label, {segment: {"users": int, metric: float | None, ...}})``, e.g.
    an ``evaluate()`` result's ``"segments"`` and ``"baseline"``; segments in the first
    series' order. Each segment is labelled with its user count (from the first series);
    an undefined metric (no users) draws no bar. The legend sits below the panels, never
    on a bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segments = list(series[0][1])
    users = [series[0][1][s].get("users", 0) for s in segments]
    ticks = [f"{s.replace('_', ' ')}\n{n:,} users" for s, n in zip(segments, users)]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.6 * len(metrics) + 0.8, 3.8), squeeze=False
    )
    width = 0.8 / len(series)
    for ax, metric in zip(axes[0], metrics):
        for n, (label, block) in enumerate(series):
            values = [block.get(s, {}).get(metric) for s in segments]
            xs = [x + (n - (len(series) - 1) / 2) * width for x in range(len(segments))]
            ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=label)
        ax.set_xticks(range(len(segments)), ticks, fontsize=8)
        ax.set_title(_TITLES.get(metric, metric).format(k=k))
        ax.set_ylim(0, 1.0 if metric == "auc" else None)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(series), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend under the panels
    return fig
