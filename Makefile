# rpbt: `make run` trains the default population, `make test` runs the test suite.
# Both create .venv and install rpbt with every feature extra (rpbt[all]: trading, PB2, report) and the test tools,
# torch pinned to the CPU build 2.13.0 (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,all]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/rpbt train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/learner_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
