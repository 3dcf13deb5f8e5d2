"""Slicer-side adapters of MVCFTraining: cohort manifest from the scene, live training plots, child-process runner.

Nothing here imports torch/MONAI/pandas at module scope; functions take the scene or nodes explicitly so
pytest can drive them with slicer-core's real vtkMRMLScene.
"""
