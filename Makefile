# sync-service developer commands. `make demo` runs it, `make test` tests it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_PORT ?= 9092
export KAFKA_PORT

.PHONY: help venv kafka-up kafka-down pg-up pg-down lint format test test-unit demo bench bench-quick bench-peer clean

help:
	@echo "make demo        run the service with a demo receiver and sample events"
	@echo "make test        lint, import contracts and every test (starts Kafka if needed)"
	@echo "make kafka-up    start a local Apache Kafka broker on 127.0.0.1:$(KAFKA_PORT)"
	@echo "make kafka-down  stop it"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

kafka-up:
	scripts/kafka/kafka.sh up

kafka-down:
	scripts/kafka/kafka.sh down

pg-up:
	scripts/postgres.sh up

pg-down:
	scripts/postgres.sh down

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: venv kafka-up pg-up lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m "not kafka" $(PYTEST_ARGS)

demo: venv
	scripts/demo.sh

# The benchmark harness (bench/README.md): results in bench/results/. BENCH_ARGS passes options.
bench: venv kafka-up pg-up
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: venv kafka-up pg-up
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

# S4 next to P4, Flink SQL doing the same job (needs a JDK 17 and Maven; jars in .cache/flink).
bench-peer: venv kafka-up pg-up
	scripts/flink/flink.sh resolve
	$(BIN)/python -m bench.run --only S0,S4,P4,P4d $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .ruff_cache
