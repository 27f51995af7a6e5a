# sync-service developer commands. `make demo` runs it, `make test` tests it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_PORT ?= 9092
export KAFKA_PORT

.PHONY: help venv ports kafka-up kafka-down pg-up pg-down lint format test test-unit test-faults demo \
	bench bench-quick clean cdc-up cdc-down demo-cdc image image-test compose-test deploy-check bench-peer

help:
	@echo "make demo        run the service with a demo receiver and sample events"
	@echo "make test        lint, import contracts and every test (starts Kafka if needed)"
	@echo "make test-faults the fault suite: kills the service, a broker and a database of its own"
	@echo "make kafka-up    start a local Apache Kafka broker on 127.0.0.1:$(KAFKA_PORT)"
	@echo "make kafka-down  stop it"
	@echo "make demo-cdc    Debezium streams a table's changes through the service to a webhook receiver"
	@echo "make cdc-up      PostgreSQL with logical replication and Kafka Connect with Debezium"
	@echo "make cdc-down    stop them (never the broker)"
	@echo "make image       build the container image with a real engine"
	@echo "make image-test  build it and run it read-only against the local broker"
	@echo "make compose-test  docker compose --profile demo up --wait, checked, then down"
	@echo "make deploy-check  lint, render and validate the Helm chart; test the alert rules"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# Keeps the tests' PostgreSQL ports out of the ephemeral range (root only; else a no-op).
ports:
	scripts/reserve-ports.sh

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

test: venv ports kafka-up pg-up lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m "not kafka and not postgres" $(PYTEST_ARGS)

# Starts and kills its own broker (19092) and PostgreSQL (55450); figures in .cache/faults/.
test-faults: venv ports
	RUN_FAULT_SUITE=1 $(BIN)/pytest tests/faults -p no:cacheprovider -rxXs $(FAULTS_PYTEST_ARGS)

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

# The container image and the deployment files (README, "Deploy").
image: venv
	scripts/image/build.sh

image-test: venv kafka-up
	scripts/image/test.sh

compose-test: venv
	scripts/image/compose-test.sh

deploy-check:
	scripts/deploy/check.sh

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .ruff_cache

# Change data capture: Debezium's PostgreSQL connector in Kafka Connect (scripts/connect/).
cdc-up: ports
	scripts/connect/cdc.sh up

cdc-down:
	scripts/connect/cdc.sh down

demo-cdc: venv
	scripts/demo-cdc.sh
