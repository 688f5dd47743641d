"""Issue 10 item 7: charts are part of the product.

Bugs pinned: ``pip install .`` had no matplotlib (``retrain`` wrote no report.png,
``evaluate --plot`` failed); the charts did not say how many users each segment had, and
the legend was drawn inside the first panel, over the bars.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from hybridrec.training.charts import metrics_chart, metrics_figure


def _block(scale: float) -> dict:
    return {
        "all": {"users": 1234, "precision": 0.9 * scale, "auc": 0.95},
        "warm_users": {"users": 1200, "precision": 0.95 * scale, "auc": 0.99},
        "cold_users": {"users": 34, "precision": 0.5 * scale, "auc": 0.9},
        "cold_items": {"users": 0, "precision": None, "auc": None},
    }


def test_each_segment_is_labelled_with_its_users_and_the_legend_is_off_the_bars():
    series = [("champion", _block(1.0)), ("challenger", _block(1.05)), ("popularity", _block(0.5))]
    fig = metrics_figure(series, ("precision", "auc"), 10, "cycle")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert ticks == [
            "all\n1,234 users",
            "warm users\n1,200 users",
            "cold users\n34 users",
            "cold items\n0 users",
        ]
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == [s[0] for s in series]
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "legend over a panel"
            assert ax.get_legend() is None
            assert len(ax.patches) == len(series) * 4  # a bar per series and segment
    finally:
        plt.close(fig)
    png = metrics_chart(series, ("precision",), 10, "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
