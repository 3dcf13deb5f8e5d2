"""Per-reader ROC curves of a reader study (one panel per reader, one curve per round, the model dashed).
Empirical curves: the points joined by straight lines, whose area is the trapezoidal AUC the analysis uses."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def plot_reader_rocs(path: Path, readings, modalities: Sequence, model=None, title: str = "") -> Path:
    """`readings`: long format (reader, modality, case, truth, rating); `model`: (case, score) or None."""
    from sklearn.metrics import auc, roc_curve

    from mvcf.stats.plots import _figure, _save

    readers = sorted(readings["reader"].unique(), key=str)
    cols = min(len(readers), 4)
    rows = math.ceil(len(readers) / cols)
    fig = _figure(3.0 * cols, 3.0 * rows + 0.4)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    model_curve: Optional[tuple] = None
    if model is not None:
        truth = readings.drop_duplicates("case").set_index("case")["truth"]
        merged = model.assign(truth=model["case"].map(truth)).dropna(subset=["truth"])
        fpr, tpr, _ = roc_curve(merged["truth"].astype(int), merged["score"])
        model_curve = (fpr, tpr, auc(fpr, tpr))
    for index, reader in enumerate(readers):
        ax = fig.add_subplot(rows, cols, index + 1)
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
        for colour, modality in zip(colours, modalities):
            part = readings[(readings["reader"] == reader) & (readings["modality"].astype(str) == str(modality))]
            if part.empty:
                continue
            fpr, tpr, _ = roc_curve(part["truth"].astype(int), part["rating"])
            ax.plot(fpr, tpr, color=colour, lw=1.5, label=f"{modality} (AUC {auc(fpr, tpr):.3f})")
        if model_curve is not None:
            ax.plot(model_curve[0], model_curve[1], color="k", lw=1.0, ls="--", label=f"model ({model_curve[2]:.3f})")
        ax.set_title(f"reader {reader}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        if index % cols == 0:
            ax.set_ylabel("sensitivity", fontsize=8)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_power(path: Path, result: dict) -> Path:
    """Power (with ±2 Monte-Carlo s.e.) against the number of cases, one line per number of readers."""
    from mvcf.stats.plots import _figure, _save

    fig = _figure(5.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    grid = result["grid"]
    for readers in sorted({g["readers"] for g in grid}):
        rows = sorted((g for g in grid if g["readers"] == readers), key=lambda g: g["cases"])
        cases = [g["cases"] for g in rows]
        power = np.array([g["power"] for g in rows])
        se = np.array([g["mc_se"] for g in rows])
        ax.errorbar(cases, power, yerr=2 * se, marker="o", capsize=3, label=f"{readers} readers")
    ax.axhline(0.8, color="0.6", ls=":", lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("cases")
    ax.set_ylabel("power (ORH, random readers and cases)")
    ax.set_title(f"AUC {result['auc_unaided']:.2f} unaided -> {result['auc_aided']:.2f} aided, "
                 f"alpha {result['alpha']}", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
