# log-capturer. `make help` lists the targets.
#
# The README's test command is `make test`; CI runs `make ci` (.ci/run).

CARGO ?= cargo
FUZZ_SECONDS ?= 60
# The soak (benches/soak/README.md): CI runs SOAK_MINUTES=3 SOAK_ROTATE=2s.
SOAK_MINUTES ?= 30
SOAK_ROTATE ?= 30s
SOAK_CONTAINERS ?= 55
# The static build (README, "Install"): aarch64-unknown-linux-gnu and
# armv7-unknown-linux-gnueabihf build the same way with their linker set.
TARGET ?= x86_64-unknown-linux-gnu
STATIC_BIN := target/$(TARGET)/release/log-capturer
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGE ?= log-capturer:$(VERSION)

.PHONY: help demo build release static image image-test unit-check test test-loki lint fmt fuzz-smoke bench ceiling bench-loki peers peers-loki soak soak-ci chaos chaos-ci ci docker-up docker-down clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: ## 3 containers log, the agent follows them for 20 s, then its metrics (starts Docker if none)
	tests/docker/demo.sh

build: ## debug build
	$(CARGO) build --locked

release: ## optimised build: target/release/log-capturer
	$(CARGO) build --locked --release

# glibc's static libc: name resolution needs no NSS modules for /etc/hosts
# and DNS (built in). Symbols are kept (readable panics), debug info not.
static: ## fully static binary: target/<TARGET>/release/log-capturer (TARGET=x86_64-unknown-linux-gnu)
	RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 \
		$(CARGO) build --locked --release --target $(TARGET) --bin log-capturer
	tests/deploy/static.sh $(STATIC_BIN) $(TARGET)

# The context is the binary alone (target/ is gigabytes).
image: static ## the FROM scratch image log-capturer:<version> (IMAGE=), built on $DOCKER_HOST
	rm -rf target/image && mkdir -p target/image
	cp $(STATIC_BIN) target/image/log-capturer
	docker build -q -f deploy/Dockerfile -t $(IMAGE) target/image
	@docker image inspect -f '$(IMAGE): {{.Size}} bytes' $(IMAGE)

image-test: image ## run the image on $DOCKER_HOST: siblings' lines exactly once, none of its own
	LC_IMAGE=$(IMAGE) $(CARGO) test --locked --test docker_image

unit-check: ## systemd-analyze verify + security of deploy/log-capturer.service; deploy/logrotate
	tests/deploy/unit.sh

# The dashboard's queries run against a real Prometheus in tests/dashboard.rs (`make test`).
rules-check: ## promtool check + unit tests of the alert rules (deploy/prometheus)
	tests/deploy/rules.sh

# `make test` includes the end-to-end tests against a real dockerd
# (tests/docker_*.rs, about 3 minutes): they use $$DOCKER_HOST (unix://) or
# the private daemon of `make docker-up`; without one they print
# "SKIPPED: no Docker daemon" and pass (LC_REQUIRE_DOCKER=1, as .ci/run
# sets, makes that a failure). docker_daemon_restart starts its own dockerd.
test: ## unit and integration tests (the README's test command)
	$(CARGO) test --locked --workspace

# Part of `make test` too; skipped there without LC_LOKI_DIR.
test-loki: ## the agent and the Loki double against real Loki 2.8.11/2.9.9 (LC_LOKI_DIR=dir with loki-*.xz, ~3.5 min)
	LC_REQUIRE_LOKI=1 $(CARGO) test --locked --test real_loki --test loki_parity --test real_loki_answers

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

fuzz-smoke: ## every fuzz target for FUZZ_SECONDS (default 60) each
	fuzz/run-all.sh $(FUZZ_SECONDS)

bench: ## criterion benchmarks of the decode pipeline
	$(CARGO) bench --locked --bench decode

ceiling: ## the agent at 100 to 10 000 streams against the API double (benches/ceiling/README.md)
	$(CARGO) build --locked --release --bin log-capturer
	$(CARGO) bench --locked --bench ceiling

bench-loki: ## lines per agent CPU s into the Loki double vs /dev/null, RSS through an outage (benches/sink/README.md)
	$(CARGO) build --locked --release --bin log-capturer
	$(CARGO) bench --locked --bench sink_ceiling

peers: ## log-capturer vs `docker logs -f` vs the Python SDK on N=10, 55 containers (~25 min)
	benches/peers/run.sh

peers-loki: ## log-capturer vs Grafana Promtail into a real Loki 2.9.9: 20 containers, 3 min (LC_LOKI_DIR; benches/peers-loki/README.md)
	$(CARGO) build --locked --release --bin log-capturer
	benches/peers-loki/run.py

soak: ## soak on a real dockerd: SOAK_MINUTES (30), SOAK_ROTATE (30s), SOAK_CONTAINERS (55)
	SOAK_MINUTES=$(SOAK_MINUTES) SOAK_ROTATE=$(SOAK_ROTATE) SOAK_CONTAINERS=$(SOAK_CONTAINERS) \
		benches/soak/soak.py

soak-ci: ## the soak compressed as CI runs it: 3 minutes, streams reopened every 2 s
	$(MAKE) soak SOAK_MINUTES=3 SOAK_ROTATE=2s

# Chaos (tests/chaos.rs): seeded fault schedules against both doubles, about
# a minute a seed. SEED=N replays one; SEEDS=N runs N seeds from CHAOS_BASE
# (1); chaos-ci runs the fixed seeds 18000-18007.
CHAOS_BASE ?= 1
chaos: ## seeded fault schedules: SEED=N replays one, SEEDS=N runs a campaign (from CHAOS_BASE)
	LC_CHAOS_BASE=$(CHAOS_BASE) $(if $(SEED),LC_SEED=$(SEED)) $(if $(SEEDS),LC_SEEDS=$(SEEDS)) \
		$(CARGO) test --locked --test chaos -- --ignored --nocapture

# A fixed list, not a time budget: which seeds CI runs must not depend on
# how fast the machine is.
chaos-ci: ## the chaos seeds 18000-18009 (about 7 minutes), as CI runs them
	LC_CHAOS_BASE=18000 LC_SEEDS=10 \
		$(CARGO) test --locked --test chaos -- --ignored --nocapture

ci: test lint fuzz-smoke soak-ci chaos-ci image-test unit-check rules-check ## what .ci/run runs

# Silent recipe: stdout is only the export line, so `eval "$$(make docker-up)"` works.
docker-up: ## start a private dockerd for tests (as root); prints the DOCKER_HOST line to export
	@tests/docker/up.sh

# Purged by default: with vfs storage every container is a full copy of its
# image, and a user trying the project expects nothing left behind. KEEP=1
# keeps the daemon's directory (its images) for a faster next docker-up.
docker-down: ## stop it, remove its containers and its directory (KEEP=1 keeps the directory)
	tests/docker/down.sh $(if $(KEEP),,--purge)

clean: ## remove build outputs (target/) and fuzzing's targets, corpora and artifacts
	$(CARGO) clean
	rm -rf fuzz/target fuzz/corpus fuzz/artifacts
