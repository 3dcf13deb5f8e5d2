"""`python -m mvcf ...` is the same as the `mvcf` console script (used for Slicer's child process)."""
from mvcf.cli.main import console

console()
