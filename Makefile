# Two commands do everything: `make run` trains CartPole-v1, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0: on this kind of machine pip takes the CPU wheel from local disk; a
# machine with a GPU gets PyPI's default (CUDA) build. Override: make install TORCH=torch
TORCH ?= torch==2.13.0
# The tested set (every package at the version the suite passed with), applied to each
# install below; torch is not in it (TORCH picks it, CPU or CUDA build).
CONSTRAINTS ?= constraints.txt
PIP_INSTALL := $(BIN)/pip install -q --disable-pip-version-check -c $(CONSTRAINTS)
ARGS ?=

.PHONY: install run test proto lint constraints bench-install bench-replay bench-learner bench-fleet bench-solve clean

$(BIN)/dqn: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "$(TORCH)"
	$(PIP_INSTALL) -e '.[test,tensorboard]'
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

# Rewrite constraints.txt from the venv, after an upgrade that passed `make test` (and
# `make bench-install`): all but pip, the project, torch and its CUDA wheels, local builds.
constraints:
	{ sed -n '/^#/p' $(CONSTRAINTS); $(BIN)/pip freeze --all --exclude-editable \
	  | grep -vE '^#|^(pip|torch|triton|nvidia-.*|distributed-dqn)==|\+'; } >$(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# Benchmarks: each prints a table and writes bench/results/NAME.json (see README).
bench-install: install
	$(PIP_INSTALL) -e '.[test,tensorboard,bench]'

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
