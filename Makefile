# make test: create .venv if needed, install julnet with its dev extras, run the test suite.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) torch
	$(BIN)/pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e '.[dev]'
	# LPIPS's linear heads ship in the lpips wheel; its own requirements would pull torchvision.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps lpips==0.1.4
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python ray_jobs/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
