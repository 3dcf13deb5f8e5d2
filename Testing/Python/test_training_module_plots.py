"""Live training curves and ROC curves as MRML table / plot series / plot chart nodes (slicer-core)."""
from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MVCFTrainingLib.plots import LiveCurves, RocCurve, show_roc_curves  # noqa: E402


def test_curves_update_the_same_nodes_in_place():
    scene = slicer.vtkMRMLScene()
    curves = LiveCurves(scene, "run")
    curves.add({"fold": 0, "epoch": 1, "train_loss": 0.7, "val_auc": 0.55, "lr": 1e-3, "seconds": 2.0})
    table = curves.tables["fold 0"]
    modified = table.GetMTime()
    nodes_before = scene.GetNumberOfNodes()
    curves.add({"fold": 0, "epoch": 2, "train_loss": 0.6, "val_loss": 0.65, "val_auc": 0.6})
    assert curves.tables["fold 0"] is table and table.GetMTime() > modified
    assert table.GetNumberOfRows() == 2
    np.testing.assert_allclose(curves.values("fold 0", "train_loss"), [0.7, 0.6])
    val_loss = curves.values("fold 0", "val_loss")  # a column that appears later is back-filled with NaN
    assert math.isnan(val_loss[0]) and val_loss[1] == pytest.approx(0.65)
    assert scene.GetNumberOfNodes() == nodes_before + 1  # only the new val_loss series
    assert table.GetColumnDescription("epoch") == "training epoch (x axis)"
    plotted = {curves.chart.GetNthPlotSeriesNode(i).GetYColumnName()
               for i in range(curves.chart.GetNumberOfPlotSeriesNodes())}
    assert plotted == {"train_loss", "val_loss", "val_auc"}  # lr and seconds stay in the table only
    assert curves.series[("fold 0", "train_loss")].GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDash


def test_runs_get_their_own_tables_and_events_without_values_are_ignored():
    scene = slicer.vtkMRMLScene()
    curves = LiveCurves(scene, "study")
    assert curves.add({"mode": "2d", "fold": 0, "epoch": 1, "note": "text only"}) is None
    assert curves.add({"mode": "2d", "fold": 0, "epoch": 1, "val_auc": 0.7}) == "mode 2d, fold 0"
    assert curves.add({"mode": "3d", "fold": 0, "epoch": 1, "val_auc": 0.8}) == "mode 3d, fold 0"
    assert curves.add({"val_auc": 0.9}) == "run"
    assert sorted(curves.tables) == ["mode 2d, fold 0", "mode 3d, fold 0", "run"]
    assert list(curves.values("run", "epoch")) == [1.0]  # no epoch: the row number
    curves.remove()
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 0


def test_roc_curves_and_reuse_of_the_chart():
    scene = slicer.vtkMRMLScene()
    truth, scores = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    curve = RocCurve.from_scores("2d", truth, scores)
    assert curve.auc == pytest.approx(8 / 9) and curve.label == "2d (AUC 0.889)"
    assert curve.fpr[0] == 0 and curve.tpr[-1] == 1 and np.all(np.diff(curve.fpr) >= 0)
    chart = show_roc_curves(scene, [curve, RocCurve.from_scores("3d", truth, scores[::-1])])
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    first = chart.GetNthPlotSeriesNode(0)
    assert first.GetXColumnName() == "fpr" and first.GetTableNode().GetNumberOfRows() == len(curve.fpr)
    assert chart.GetXAxisRange() == (0.0, 1.0)
    again = show_roc_curves(scene, [curve], chart=chart)
    assert again is chart and chart.GetNumberOfPlotSeriesNodes() == 2
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 2  # old series and tables removed
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 2
