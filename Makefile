# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench sandbox clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/linli run --sandbox-without-token

sandbox: $(STAMP)
	$(BIN)/linli sandbox

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy bot handlers models tests bench

pytest: $(STAMP)
	env -u LINLI_TEST_DATABASE_URL $(BIN)/pytest
	@if [ -n "$$LINLI_TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL =="; $(BIN)/pytest; \
	else echo "(LINLI_TEST_DATABASE_URL unset: PostgreSQL run skipped)"; fi

test: lint typecheck pytest

# Beside a throwaway loopback PostgreSQL (the one .ci/run starts) for the …postgres… figures.
bench: $(STAMP)
	.ci/with-postgres $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
