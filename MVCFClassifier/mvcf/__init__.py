"""mvcf: malignant vs osteoporotic vertebral compression fracture classification on CT.

Research use only. The pure-Python core of the MVCFClassifier 3D Slicer extension: it never imports
`slicer`, `qt` or `ctk`, and imports torch/MONAI only inside the functions that need them, so that
`import mvcf` stays fast.

Data flow, one module per step (docs/architecture.md):
    read_ct -> locate (VertebraQuery -> VertebraLocation) -> views (modes: the view-mode registry)
    -> inference (device, model loading, forward) -> predict -> explain
    cohorts: manifest -> splits -> dataset -> train -> evaluate / study -> stats
"""
from mvcf.errors import MVCFError

__version__ = "0.1.0"
RESEARCH_USE_DISCLAIMER = (
    "Research use only: not a medical device. The shipped demo model was trained on synthetic data; "
    "its probabilities say nothing about real patients."
)

__all__ = ["MVCFError", "RESEARCH_USE_DISCLAIMER", "__version__"]
