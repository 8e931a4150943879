# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= age_shift

.PHONY: install demo test lint bench

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"

# Install, then run the headline experiment on the built-in demo faces.
demo: install
	$(PY) -m engine experiment=$(EXPERIMENT)

# Install, pull the pinned model assets through the registry, then run pytest offline.
test: install
	$(PY) -m engine.assets pull
	FACECF_OFFLINE=1 FACECF_REQUIRE_ASSETS=1 $(PY) -m pytest -q

lint:
	$(PY) -m ruff check engine editors classifiers tests benchmarks scripts

bench:
	$(PY) benchmarks/bench_warp.py
