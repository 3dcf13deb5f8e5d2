"""Per-reader ROC curves of a reader study (one panel per reader, one curve per round, the model dashed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def plot_reader_rocs(path: Path, readings, modalities: Sequence, model=None, title: str = "") -> Path:
    """`readings`: long format (reader, modality, case, truth, rating); `model`: (case, score) or None."""
    from sklearn.metrics import roc_curve

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
        model_curve = (fpr, tpr)
    for index, reader in enumerate(readers):
        ax = fig.add_subplot(rows, cols, index + 1)
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
        for colour, modality in zip(colours, modalities):
            part = readings[(readings["reader"] == reader) & (readings["modality"].astype(str) == str(modality))]
            if part.empty:
                continue
            fpr, tpr, _ = roc_curve(part["truth"].astype(int), part["rating"])
            ax.plot(fpr, tpr, color=colour, lw=1.5, drawstyle="steps-post", label=str(modality))
        if model_curve is not None:
            ax.plot(*model_curve, color="k", lw=1.0, ls="--", label="model")
        ax.set_title(f"reader {reader}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        if index % cols == 0:
            ax.set_ylabel("sensitivity", fontsize=8)
        if index >= (rows - 1) * cols:
            ax.set_xlabel("1 - specificity", fontsize=8)
        if index == 0:
            ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
