# Biometrics — the commands a person and CI run the same way.
#   make setup   install every system dependency (idempotent, quick when done)
#   make demo    the whole system on this machine, on the test API server, until Ctrl-C
#   make test    formatting, lints, CRD drift check, every test and a run of the demo
#   make bench   benchmarks against the tools they replace, printed as ratios

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := $(CURDIR)/.tools/bin:$(PATH)
CARGO ?= cargo

.PHONY: setup build release fuzz demo demo-check test fmt fmt-check lint crds crds-check chart-check unit e2e bench bench-quick rollout-noise

setup:
	@bash hack/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets --locked

# What the images run: the same build as operator/Dockerfile and agent/Dockerfile, checked.
release: setup
	$(CARGO) build --release --locked -p biometrics-operator -p biometrics-agent
	@bash hack/release-check.sh

# Every fuzz target for FUZZ_SECONDS (default 60) each, with cargo fuzz (not part of `make test`).
fuzz: setup
	@bash hack/fuzz.sh

demo: setup
	@bash hack/demo.sh

# The demo, stopping once the first capture and invalidations are in (part of `make test`).
demo-check: setup
	@bash hack/demo.sh --check >/dev/null

test: setup fmt-check lint crds-check chart-check unit bench-quick demo-check

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Regenerate the committed CRD YAML from the Rust types, and the Helm chart's copies.
crds:
	$(CARGO) run --quiet --locked -p biometrics-crds --bin crdgen
	cp crds/yaml/*.yaml charts/biometrics/crds/

# Lints, renders and validates the Helm chart; fails when its CRDs differ from crds/yaml/.
chart-check: setup
	@bash hack/chart-check.sh

# Fails when crds/yaml/ differs from what the types generate.
crds-check:
	$(CARGO) test --quiet --locked -p biometrics-crds --test crd_drift

# The end-to-end tests run the real binaries: build them all first. Most tests spend their
# time waiting on processes (captures of whole seconds, pods starting, Redis), so on two
# cores two test binaries run at once, four tests each; every test binds addresses of its
# own (hack/test.sh says which run alone). TEST_ARGS go to every binary: a name filter.
TEST_THREADS ?= 4
TEST_LANES ?= 2

unit:
	$(CARGO) build --workspace --bins --locked
	TEST_LANES=$(TEST_LANES) RUST_TEST_THREADS=$(TEST_THREADS) CARGO="$(CARGO)" bash hack/test.sh

# Only the operator's end-to-end tests (part of `make test` too).
e2e: setup
	$(CARGO) build --workspace --bins --locked
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p biometrics-operator --test e2e --test cache_e2e --test cluster_e2e --test chart_e2e --test rollout_e2e

# Label-only rollouts on the local cluster, judged per request: the spread of this machine
# that the default spec.regression bounds are derived from (not part of `make test`).
rollout-noise: setup
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --locked -p biometrics-operator --test rollout_e2e -- --ignored --nocapture label_only_rollouts_measure_the_noise

# Every benchmark at small sizes on the debug build, with the same checks (part of `make
# test`, so a benchmark that breaks fails CI; its figures are not comparable).
bench-quick: setup
	$(CARGO) build --workspace --bins --locked
	./target/debug/biometrics-bench --quick

# Release builds of what is measured, then the full figures.
bench: setup
	$(CARGO) build --release --locked -p biometrics-agent -p biometrics-operator -p biometrics-test-apiserver -p biometrics-bench
	./target/release/biometrics-bench
