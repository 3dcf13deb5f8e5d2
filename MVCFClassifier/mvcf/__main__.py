"""`python -m mvcf ...` is the same as the `mvcf` console script (used for Slicer's child process)."""
import sys

from mvcf.cli.main import main

sys.exit(main())
