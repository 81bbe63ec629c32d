# make test : fresh .venv, torch==2.13.0 (CPU) first, then bloomseg[dev,napari], then the
#             import layers (lint-imports), ruff, and pytest (under xvfb-run where there is
#             no display, for the napari plugin's tests; they skip without one)
# make demo : the same install, then the main job on real images
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install lint test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: pip takes the local CPU wheel and never resolves a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,napari]'
	touch $@

install: $(VENV)/.installed

lint: install
	# imports run one way, from the command line down to errors (pyproject.toml's contract)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests benchmarks scripts

# the napari plugin's tests draw on a virtual screen where there is no display
XVFB := $(shell [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null 2>&1 && echo "xvfb-run -a")

test: lint
	$(XVFB) $(PY) -m pytest -q

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) benchmarks/backbone.py
	$(PY) benchmarks/cache.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
