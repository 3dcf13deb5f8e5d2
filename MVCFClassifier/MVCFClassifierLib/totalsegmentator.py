"""The optional TotalSegmentator extension: how it is called to segment the vertebrae, and which of its
segments are vertebrae.

Its `total` task makes 117 segments (organs, muscles, vessels, bones); only the `vertebrae_*` ones are
targets for the classifier. TotalSegmentatorLogic.process has changed over time: its third parameter was
`fast` (a bool) and is `quality` ("normal", "fast", "faster"; True still means "fast") since 2026;
`subset` (a list of class names) exists since 2023-03. The options are chosen from the signature the
installed extension has, so neither an older nor a newer one silently runs the slow full-quality model.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Optional

LEVELS = ([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
          + ["S1"])
#: TotalSegmentator class names of the vertebrae (segment IDs in the segmentation it writes).
VERTEBRA_CLASSES = tuple(f"vertebrae_{level}" for level in LEVELS)
_VERTEBRA = re.compile(r"^vertebrae_(C[1-7]|T(?:[1-9]|1[0-2])|L[1-5]|S1)$")


def vertebra_level(text: str) -> Optional[str]:
    """'L1' for 'vertebrae_L1' (a TotalSegmentator class name), else None."""
    match = _VERTEBRA.match(text.strip())
    return match.group(1) if match else None


def vertebra_segments(segmentation_node) -> list[tuple[str, str]]:
    """(segment ID, level) of every vertebra segment, in the segmentation's order. TotalSegmentator names a
    segment's ID after its class; with standard terminology names on, the segment's *name* becomes e.g.
    'L1 vertebra', so the ID is checked first, then the name."""
    segmentation = segmentation_node.GetSegmentation()
    found = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        level = vertebra_level(segment_id) or vertebra_level(segmentation.GetSegment(segment_id).GetName())
        if level:
            found.append((segment_id, level))
    return found


def process_options(process: Callable[..., Any]) -> dict[str, Any]:
    """Keyword arguments for TotalSegmentatorLogic.process: the `total` task, its fast model, and only the
    vertebrae when the installed version can restrict the task."""
    parameters = inspect.signature(process).parameters
    options: dict[str, Any] = {"task": "total"}
    if "quality" in parameters:
        options["quality"] = "fast"
    elif "fast" in parameters:
        options["fast"] = True
    if "subset" in parameters:
        options["subset"] = list(VERTEBRA_CLASSES)
    return options


def segment_vertebrae(ct_node, total_segmentator_logic, scene: Optional[Any] = None,
                      setup: bool = True) -> Any:
    """Run TotalSegmentator on `ct_node` into a new segmentation node (named after the CT) and return it.
    `setup` first lets the extension install its own packages (it asks the user itself)."""
    scene = scene or ct_node.GetScene()
    if setup and hasattr(total_segmentator_logic, "setupPythonRequirements"):
        total_segmentator_logic.setupPythonRequirements()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{ct_node.GetName()} TotalSegmentator")
    try:
        total_segmentator_logic.process(ct_node, segmentation, **process_options(total_segmentator_logic.process))
    except BaseException:
        scene.RemoveNode(segmentation)
        raise
    return segmentation

