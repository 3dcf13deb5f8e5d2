"""The parameter-node plumbing both module widgets share (Slicer's scripted-module template), written once:
load the .ui and give its selectors the scene, connect a parameter node to the widgets and observe it, let go
of it on exit and when the scene closes. No decision lives here; the panels' decisions are in the logic.

Mix it in before ScriptedLoadableModuleWidget and VTKObservationMixin; the widget defines
`onParameterNodeModified(caller=None, event=None)` and `initializeParameterNode()`.
"""
from __future__ import annotations


class ParameterNodePanel:
    _parameterNode = None
    _parameterNodeGuiTag = None

    def loadPanel(self, ui_file: str) -> None:
        """Load Resources/<ui_file>, expose its widgets as `self.ui`, and follow the scene's close events."""
        import slicer

        ui_widget = slicer.util.loadUI(self.resourcePath(ui_file))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    @staticmethod
    def pollTimer(callback, interval_ms: int = 200):
        """A QTimer that calls `callback` every `interval_ms` once started (the child run's poll)."""
        import qt

        timer = qt.QTimer()
        timer.setInterval(interval_ms)
        timer.connect("timeout()", callback)
        return timer

    @staticmethod
    def showPicture(label, png: bytes, tooltip: str = "", min_width: int = 240) -> bool:
        """Show PNG bytes in a QLabel, scaled down to the label's width (never below `min_width`); False
        when they are not a readable PNG. Setting the label's text later clears the picture."""
        import qt

        pixmap = qt.QPixmap()
        if not png or not pixmap.loadFromData(qt.QByteArray(png), "PNG"):
            return False
        label.setPixmap(pixmap.scaledToWidth(min(pixmap.width(), max(min_width, label.width)),
                                             qt.Qt.SmoothTransformation))
        label.toolTip = tooltip
        return True

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def setParameterNode(self, parameter_node) -> None:
        """Bind `parameter_node` (or none) to the widgets, releasing the one bound before."""
        import vtk

        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = parameter_node
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()
