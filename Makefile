# `make quickstart` and `make test` create the virtualenv (.venv) when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/quickstart

.PHONY: install quickstart test test-all bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The main job on the embedded digits dataset: IRP -> AutoS -> every criterion at 3 sparsities x 2
# seeds -> table + figures; no download, ~1 min on 2 CPU cores.
quickstart: install
	$(PY) -m autosparse_jax.main --config=configs/quickstart.py --workdir=$(WORKDIR)

# What CI runs (.ci/run): everything but the `slow` marker, on both cores (pytest-xdist: each test
# file on one worker, so its module fixtures are built once).
test: install
	$(PY) -m pytest -m "not slow" -q -n 2 --dist loadfile

test-all: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
