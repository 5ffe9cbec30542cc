# Two commands do everything: `make run` trains CartPole-v1, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0: on this kind of machine pip takes the CPU wheel from local disk; a
# machine with a GPU gets PyPI's default (CUDA) build. Override: make install TORCH=torch
TORCH ?= torch==2.13.0
ARGS ?=

.PHONY: install run test proto lint bench-install bench-replay bench-learner bench-fleet bench-solve clean

$(BIN)/dqn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

install: $(BIN)/dqn

run: install
	$(BIN)/dqn train $(ARGS)

test: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(ARGS)

proto: install
	$(BIN)/python -m dqn.protogen

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Benchmarks: each prints a table and writes bench/results/NAME.json (see README).
bench-install: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,bench]'

bench-replay: install
	$(BIN)/python bench/replay.py $(ARGS)

bench-learner: install
	$(BIN)/python bench/learner.py $(ARGS)

bench-fleet: install
	$(BIN)/python bench/fleet.py $(ARGS)

bench-solve: bench-install
	$(BIN)/python bench/solve.py $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
