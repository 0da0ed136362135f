# `make test` and `make demo` each do the whole set-up on a fresh Debian machine
# (apt packages, .venv) and then run.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo bench clean
setup:
	@bash scripts/setup.sh

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

demo: setup
	$(BIN)/vxtap lab run seed

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
