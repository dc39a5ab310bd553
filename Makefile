# The two commands (see README): `make demo` runs the whole pipeline, `make test` runs every test.
# Both do their own set-up (scripts/setup.sh is idempotent).
.PHONY: demo test setup lint bench clean

demo:
	@scripts/setup.sh
	@.venv/bin/cloudarb demo $(ARGS)

test:
	@scripts/setup.sh --test
	@.venv/bin/python -m pytest $(ARGS)

setup:
	@scripts/setup.sh --test

lint:
	@scripts/setup.sh
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench:
	@scripts/setup.sh
	.venv/bin/python tests/benchmarks/run_all.py $(ARGS)

clean:
	rm -rf var .cache/kafka/libs-* .pytest_cache .mypy_cache .ruff_cache
