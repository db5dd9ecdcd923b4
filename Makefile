# `make demo` and `make test` work on a fresh machine with only Python and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean venv

venv: $(STAMP)

# Re-install only when the project metadata changes: a second call is quick.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,mpi]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sparsenet demo

test: $(STAMP)
	SPARSENET_REQUIRE_MPI=1 $(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
