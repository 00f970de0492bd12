# Everyday commands: thin wrappers over the real ones, so `make -n <target>` shows what runs.
# `make` or `make help` lists them.

CARGO ?= cargo
COMPOSE ?= docker compose
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help build test bench run kafka-up kafka-down docker-build docker-up docker-down lint ops-check

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Release build of the iiot binary (target/release/iiot)
	$(CARGO) build --release --locked -p iiot --bin iiot

test: ## The whole test suite: format, clippy, every test, ops checks (scripts/test.sh)
	bash scripts/test.sh

bench: ## Criterion benchmarks and the end-to-end iiot bench (docs/benchmarks.md)
	$(CARGO) bench -p iiot --bench pipeline
	$(CARGO) run --release -p iiot -- bench --devices 10000 --duration 10s --runs 3

run: ## Everything in one process on the embedded bus (pass flags with ARGS="--devices 100")
	$(CARGO) run --release -p iiot -- run $(ARGS)

kafka-up: ## Start a local Kafka-compatible broker (tansu) on 127.0.0.1:9092
	bash scripts/kafka-up.sh

kafka-down: ## Stop the local broker
	bash scripts/kafka-down.sh

docker-build: ## Build the iiot image (Dockerfile)
	docker build -t iiot:latest .

docker-up: ## Kafka (KRaft), simulate, 2× process, serve, Prometheus, Grafana (docker-compose.yml)
	@test -s secrets/iiot_token || { mkdir -p secrets && openssl rand -hex 32 > secrets/iiot_token && echo "made the API token secrets/iiot_token"; }
	$(COMPOSE) up -d --build

docker-down: ## Stop the compose stack (volumes are kept; add -v by hand to drop them)
	$(COMPOSE) down

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

ops-check: ## Prometheus rules and tests, Kubernetes and compose checks (scripts/ops-check.sh)
	bash scripts/ops-check.sh
