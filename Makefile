# `make test` and `make demo` each do the whole set-up on a fresh Debian machine
# (apt packages, .venv) and then run.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo bench dist clean
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

# Long-running measurements, kept out of `make test`; each prints its figures and
# the command line to record in docs/benchmarks.md.
BENCHES := api client dataplane agent collector collector_loop
bench: setup
	set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py; done

# The wheel and the sdist, into dist/ (docs/deploy.md, "Packages").
dist: setup
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:
	rm -rf dist $(VENV) .pytest_cache .mypy_cache .ruff_cache
