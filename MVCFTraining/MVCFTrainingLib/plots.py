"""Training curves and ROC curves as Slicer plot nodes: table node -> plot series nodes -> plot chart node.

`LiveCurves.add(metrics)` takes the `metrics` events of `mvcf train/study` as they arrive and appends a row
to a table node per run (a study trains several models), so the chart redraws in place. Every function takes
the scene explicitly so pytest can drive it with slicer-core's real MRML.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

# Fields that say which model/run a metrics event belongs to rather than being a curve.
RUN_KEYS = ("view", "mode", "arch", "model", "fold", "split", "phase")
X_KEYS = ("epoch", "step")
PALETTE = ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
           (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _new_node(scene, class_name: str, name: str):
    node = scene.AddNewNodeByClass(class_name, name)
    if node is None:
        raise RuntimeError(f"the scene cannot create {class_name}")
    return node


def _chart(scene, name: str, title: str, x_title: str, y_title: str, chart=None):
    chart = chart or _new_node(scene, "vtkMRMLPlotChartNode", name)
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    chart.SetLegendVisibility(True)
    return chart


def _series(scene, name: str, table_node, x_column: str, y_column: str, color, dashed: bool = False):
    import slicer

    series = _new_node(scene, "vtkMRMLPlotSeriesNode", name)
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName(x_column)
    series.SetYColumnName(y_column)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
    series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash if dashed
                        else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
    series.SetColor(*color)
    return series


def _double_column(table, name: str, rows: int):
    import vtk

    column = vtk.vtkDoubleArray()
    column.SetName(name)
    column.SetNumberOfTuples(rows)
    column.Fill(math.nan)
    table.AddColumn(column)
    return column


class LiveCurves:
    """Loss and AUC per epoch: one table node per run (fold, view mode), every curve on one chart (loss and
    AUC share the 0-1 scale; training curves dashed)."""

    def __init__(self, scene, name: str = "MVCF training") -> None:
        self.scene = scene
        self.name = name
        self.chart = _chart(scene, f"{name} curves", f"{name}: loss and AUC per epoch", "epoch", "loss / AUC")
        self.tables: dict[str, Any] = {}
        self.series: dict[tuple[str, str], Any] = {}
        self._colors: dict[str, tuple] = {}

    def _run_key(self, metrics: dict) -> str:
        parts = [f"{k} {metrics[k]}" for k in RUN_KEYS if k in metrics and metrics[k] not in (None, "")]
        return ", ".join(parts) or "run"

    def _table(self, run: str):
        node = self.tables.get(run)
        if node is None:
            node = _new_node(self.scene, "vtkMRMLTableNode", f"{self.name} curves ({run})")
            node.SetAttribute("MVCF.role", "training-curves")
            _double_column(node.GetTable(), "epoch", 0)
            node.SetColumnDescription("epoch", "training epoch (x axis)")
            self.tables[run] = node
        return node

    def _color(self, column: str):
        if column not in self._colors:
            self._colors[column] = PALETTE[len(self._colors) % len(PALETTE)]
        return self._colors[column]

    def add(self, metrics: dict) -> Optional[str]:
        """Append one metrics event (e.g. {"epoch": 3, "train_loss": .4, "val_auc": .8}); returns its run key,
        or None when the event carries no curve value (nothing is added then)."""
        values = {k: float(v) for k, v in metrics.items()
                  if _is_number(v) and k not in RUN_KEYS and k not in X_KEYS}
        if not values:
            return None
        run = self._run_key(metrics)
        node = self._table(run)
        table = node.GetTable()
        rows = table.GetNumberOfRows()
        x = next((float(metrics[k]) for k in X_KEYS if _is_number(metrics.get(k))), float(rows + 1))
        was_modifying = node.StartModify()
        for column_name in values:
            if table.GetColumnByName(column_name) is None:
                _double_column(table, column_name, rows)
                self._add_series(run, node, column_name)
        for c in range(table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            name = column.GetName()
            column.InsertNextValue(x if name == "epoch" else values.get(name, math.nan))
        table.Modified()
        node.Modified()
        node.EndModify(was_modifying)
        return run

    def _add_series(self, run: str, table_node, column: str) -> None:
        lowered = column.lower()
        if "loss" not in lowered and "auc" not in lowered:
            return  # kept in the table (e.g. lr, seconds), not plotted
        label = column if run == "run" else f"{run}: {column}"
        series = _series(self.scene, label, table_node, "epoch", column, self._color(column),
                         dashed=lowered.startswith("train"))
        self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.series[(run, column)] = series

    def values(self, run: str, column: str) -> np.ndarray:
        """The curve as stored in the table node (NaN where an epoch had no value)."""
        table = self.tables[run].GetTable()
        array = table.GetColumnByName(column)
        return np.array([array.GetValue(i) for i in range(array.GetNumberOfTuples())], dtype=float)

    def remove(self) -> None:
        for node in [*self.series.values(), *self.tables.values(), self.chart]:
            self.scene.RemoveNode(node)
        self.series.clear()
        self.tables.clear()


@dataclass
class RocCurve:
    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: Optional[float] = None

    @classmethod
    def from_scores(cls, name: str, truth: Sequence[int], scores: Sequence[float]) -> "RocCurve":
        """Empirical ROC from binary truth (1 = MVCF) and scores; AUC by the trapezoid (= Mann-Whitney)."""
        from sklearn.metrics import roc_auc_score, roc_curve

        fpr, tpr, _ = roc_curve(np.asarray(truth, dtype=int), np.asarray(scores, dtype=float))
        return cls(name, fpr, tpr, float(roc_auc_score(truth, scores)))

    @property
    def label(self) -> str:
        return self.name if self.auc is None else f"{self.name} (AUC {self.auc:.3f})"


def show_roc_curves(scene, curves: Iterable[RocCurve], name: str = "MVCF ROC", chart=None):
    """One chart with one series per ROC curve plus the chance diagonal; returns the chart node.
    Reusing `chart` replaces its series (the old series and their tables are removed from the scene)."""
    chart = _chart(scene, name, name, "1 - specificity (false positive rate)", "sensitivity (true positive rate)",
                   chart)
    for i in reversed(range(chart.GetNumberOfPlotSeriesNodes())):
        series = chart.GetNthPlotSeriesNode(i)
        chart.RemoveNthPlotSeriesNodeID(i)
        if series is not None:
            table = series.GetTableNode()
            scene.RemoveNode(series)
            if table is not None and table.GetAttribute("MVCF.role") == "roc":
                scene.RemoveNode(table)
    for axis in ("X", "Y"):
        getattr(chart, f"Set{axis}AxisRangeAuto")(False)
        getattr(chart, f"Set{axis}AxisRange")(0.0, 1.0)
    entries = [*curves, RocCurve("chance", np.array([0.0, 1.0]), np.array([0.0, 1.0]))]
    for index, curve in enumerate(entries):
        table_node = _new_node(scene, "vtkMRMLTableNode", f"{name} {curve.name} points")
        table_node.SetAttribute("MVCF.role", "roc")
        table = table_node.GetTable()
        for column_name, data in (("fpr", curve.fpr), ("tpr", curve.tpr)):
            column = _double_column(table, column_name, len(data))
            for i, value in enumerate(np.asarray(data, dtype=float)):
                column.SetValue(i, value)
        table_node.SetColumnDescription("fpr", "false positive rate = 1 - specificity")
        table_node.SetColumnDescription("tpr", "true positive rate = sensitivity")
        is_chance = curve.name == "chance" and index == len(entries) - 1
        color = (0.6, 0.6, 0.6) if is_chance else PALETTE[index % len(PALETTE)]
        series = _series(scene, curve.label, table_node, "fpr", "tpr", color, dashed=is_chance)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart
