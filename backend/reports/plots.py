"""Plots for the reports: matplotlib (Agg, no pyplot state) → inline base64 PNG."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd


def _png(fig) -> str:  # noqa: ANN001
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):  # noqa: ANN202
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def pr_curves(curves: dict[str, pd.DataFrame], *, marks: dict[str, list[tuple[str, float]]]
              ) -> str:
    """Precision–recall per label; ``marks``: ``{label: [(name, threshold), ...]}``."""
    fig = _figure(8.6, 5.4)
    ax = fig.add_subplot()
    n = 0
    for label, curve in curves.items():
        ok = curve["precision"].notna()
        line, = ax.plot(curve.loc[ok, "recall"], curve.loc[ok, "precision"], label=label,
                        linewidth=1.8)
        for name, t in marks.get(label, []):
            row = curve[curve["threshold"] >= t].head(1)
            if len(row) and not np.isnan(row["precision"].iloc[0]):
                ax.plot(row["recall"], row["precision"], "o", color=line.get_color())
                # stagger the labels so marks close together do not print over each other
                dy = (-14, 6, -26, 18)[n % 4]
                ax.annotate(f"{label}: {name} {t:g}",
                            (row["recall"].iloc[0], row["precision"].iloc[0]),
                            fontsize=9, xytext=(6, dy), textcoords="offset points",
                            color=line.get_color(),
                            arrowprops={"arrowstyle": "-", "color": line.get_color(),
                                        "alpha": 0.5})
                n += 1
    ax.set_xlabel("recall", fontsize=11)
    ax.set_ylabel("precision", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="lower left")
    ax.set_title("Precision–recall per label\n(automatic decision = top label and P ≥ t)",
                 fontsize=11)
    return _png(fig)


def score_histograms(scores: pd.DataFrame, classes: list[str]) -> str:
    """One panel per label L: the histogram of P(L), one series per true label."""
    n = len(classes)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig = _figure(4.6 * cols, 3.3 * rows)
    bins = np.linspace(0, 1, 21)
    for k, label in enumerate(classes):
        ax = fig.add_subplot(rows, cols, k + 1)
        for true in classes:
            p = scores.loc[scores["true_label"] == true, f"p_{label}"]
            if len(p):
                ax.hist(p, bins=bins, histtype="step", label=f"true {true}", linewidth=1.4)
        ax.set_title(f"P({label})", fontsize=11)
        ax.set_yscale("log")
        ax.tick_params(labelsize=9)
        if k == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Score histograms per true label", fontsize=12)
    fig.tight_layout()
    return _png(fig)


def similarity_plot(curve: pd.DataFrame, pairs: pd.DataFrame, *, marks: list[tuple[str, float]]
                    ) -> str:
    fig = _figure(10, 3.9)
    ax = fig.add_subplot(1, 2, 1)
    for column in ("precision", "recall", "accuracy"):
        ax.plot(curve["threshold"], curve[column], label=column, drawstyle="steps-post")
    for name, t in marks:
        ax.axvline(t, linestyle="--", color="grey")
        ax.annotate(name, (t, 0.02), fontsize=9, rotation=90)
    ax.set_xlabel("reuse distance T (reuse if distance ≤ T)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=9)
    ax.tick_params(labelsize=9)
    ax.grid(alpha=0.3)
    ax2 = fig.add_subplot(1, 2, 2)
    bins = np.linspace(0, max(float(pairs["distance"].max()), 1e-3), 21)
    for flag, name in ((True, "same decision"), (False, "different")):
        d = pairs.loc[pairs["same"].astype(bool) == flag, "distance"]
        if len(d):
            ax2.hist(d, bins=bins, histtype="step", label=name, linewidth=1.4)
    ax2.set_xlabel("distance of the pair")
    ax2.legend(fontsize=9)
    ax2.tick_params(labelsize=9)
    fig.suptitle("Similarity: pairs judged by people (majority vote)")
    return _png(fig)
