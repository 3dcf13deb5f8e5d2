"""Slicer-side adapters of MVCFClassifier: MRML nodes <-> mvcf core objects, and the child-process runner.

Nothing here imports torch/MONAI at module scope; functions take the scene or nodes explicitly so pytest
can drive them with slicer-core's real vtkMRMLScene.
"""
