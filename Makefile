# log-capturer. `make help` lists the targets.
#
# The README's test command is `make test`; CI runs `make ci` (.ci/run).

CARGO ?= cargo
FUZZ_SECONDS ?= 60
# The soak (benches/soak/README.md): CI runs SOAK_MINUTES=3 SOAK_ROTATE=2s.
SOAK_MINUTES ?= 30
SOAK_ROTATE ?= 30s
SOAK_CONTAINERS ?= 55

.PHONY: help build release test lint fmt fuzz-smoke bench soak ci docker-up docker-down clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## debug build
	$(CARGO) build --locked

release: ## optimised build: target/release/log-capturer
	$(CARGO) build --locked --release

test: ## unit and integration tests (the README's test command)
	$(CARGO) test --locked --workspace

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

fuzz-smoke: ## every fuzz target for FUZZ_SECONDS (default 60) each
	fuzz/run-all.sh $(FUZZ_SECONDS)

bench: ## criterion benchmarks of the decode pipeline
	$(CARGO) bench --locked --bench decode

soak: ## soak on a real dockerd: SOAK_MINUTES (30), SOAK_ROTATE (30s), SOAK_CONTAINERS (55)
	SOAK_MINUTES=$(SOAK_MINUTES) SOAK_ROTATE=$(SOAK_ROTATE) SOAK_CONTAINERS=$(SOAK_CONTAINERS) \
		benches/soak/soak.py

ci: test lint fuzz-smoke ## what .ci/run runs

docker-up: ## start a private dockerd for tests (prints DOCKER_HOST)
	tests/docker/up.sh

docker-down: ## stop it and remove its containers
	tests/docker/down.sh

clean:
	$(CARGO) clean
	rm -rf fuzz/target fuzz/corpus fuzz/artifacts
