# Two entry points (README quick start): `make demo` and `make test`. Both create .venv on first use;
# `make test` also installs the Debian packages its tests need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch is pinned in the same command so pip takes the CPU build on disk, not a multi-GB CUDA one.
	$(BIN)/pip install "torch==2.13.0" -e ".[test]"
	touch $(STAMP)

# Debian packages for the report/DICOM/PACS tests (Orthanc, dciodvfy, Chromium, poppler, Pango); installs only
# what is missing, and leaves a machine without root or apt alone (those tests then skip with their reason).
.PHONY: setup system demo test bench
system:
	.ci/system-packages.sh

setup: $(STAMP)

demo: $(STAMP)
	# --overwrite replaces only an earlier demo_out of mvcf (its .mvcf-output marker), so a second run works.
	$(BIN)/mvcf demo --out demo_out --overwrite

test: system $(STAMP)
	$(BIN)/python -m pytest -q Testing/Python

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py
