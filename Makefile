# Outcrop: the commands people and CI run. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := $(CURDIR)/.demo/data
CODE := $(wildcard src tests bench examples)

.PHONY: demo test check bench install format clean readers bytecode

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# Byte-code for the editable source, written even under PYTHONDONTWRITEBYTECODE (set on
# some machines), so that each server start does not compile every module again.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src >/dev/null

demo: $(STAMP) bytecode
	$(BIN)/python examples/make_demo_data.py $(DEMO_DATA)
	$(BIN)/outcrop ingest images demo $(DEMO_DATA)/real/images --data-dir $(CURDIR)/.demo/state
	$(BIN)/outcrop serve $(DEMO_DATA) --data-dir $(CURDIR)/.demo/state

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench: $(STAMP) bytecode
	$(BIN)/python bench/run.py $(BENCH_ARGS)

readers: examples/readers/wave  # the compiled example reader (examples/readers/wave.c)

examples/readers/wave: examples/readers/wave.c
	cc -O2 -o $@ $< -lm

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
