# make test : fresh .venv, torch==2.13.0 (CPU) first, then bloomseg[dev,napari,docs], then the
#             import layers (lint-imports), ruff, and pytest (under xvfb-run where there is
#             no display, for the napari plugin's tests; they skip without one)
# make docs : the documentation site (MkDocs, strict) into site/
# make wheel: the wheel into dist/, checked (contents; a fresh venv installs it and predicts)
# make demo : the same install, then the main job on real images
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install lint test docs wheel demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: pip takes the local CPU wheel and never resolves a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,napari,docs]'
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

# the documentation site into site/, strict: a broken link or a missing page fails
docs: install
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# the wheel into dist/, checked: what it must carry, and a fresh venv that installs and predicts
wheel: install
	$(PY) scripts/check_wheel.py

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) benchmarks/backbone.py
	$(PY) benchmarks/cache.py

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
