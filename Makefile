# The only entry point for building, running and testing Gatehouse.
# Every target installs what it needs first, idempotently.

CARGO ?= cargo
DEBIAN_PACKAGES := build-essential pkg-config curl ca-certificates pebble bind9 bind9-dnsutils
BENCH_PACKAGES := nginx wrk util-linux procps

.PHONY: run test check lint fmt setup setup-debian setup-toolchain bench-proxy bench-acme clean

## Run the appliance on its embedded default config (standalone, loopback, no cluster).
run: setup
	$(CARGO) run -p gatehouse -- run

## Run the whole test suite (unit, integration, end-to-end against the real binary).
test: setup
	$(CARGO) build -p gatehouse   # the end-to-end tests run this binary
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

## Formatting and lints, as CI runs them.
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: setup-toolchain
	$(CARGO) fmt --all

## Validate a config file: make check CONFIG=examples/gatehouse.toml
check: setup
	$(CARGO) run -p gatehouse -- check --config $(CONFIG)

## Whole-system proxy benchmark against nginx (release build; not part of the tests).
bench-proxy: setup
	@$(MAKE) --no-print-directory setup-debian DEBIAN_PACKAGES="$(BENCH_PACKAGES)"
	bench/proxy

## ACME issuance benchmark against local pebble + bind9 (release build; not part of the tests).
bench-acme: setup
	bench/acme

setup: setup-debian setup-toolchain

setup-debian:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	fi

setup-toolchain:
	@command -v rustup >/dev/null || { echo "rustup is required (https://rustup.rs)"; exit 1; }
	@rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt clippy

clean:
	$(CARGO) clean

## Fuzz every parser of untrusted input, FUZZ_SECONDS each, one target after another (nightly).
## The examples seed the corpora; corpora and crashes stay in fuzz/corpus, fuzz/artifacts.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := manifests config route_table

.PHONY: fuzz
fuzz: setup
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@$(CARGO) +nightly fuzz --version >/dev/null 2>&1 || $(CARGO) +nightly install cargo-fuzz --locked
	@mkdir -p fuzz/corpus/manifests fuzz/corpus/config
	@cp examples/manifests/*.yaml fuzz/corpus/manifests/
	@cp examples/*.toml fuzz/corpus/config/
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS)s"; \
	  $(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done
