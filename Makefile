# The only entry point for building, running and testing Gatehouse.
# Every target installs what it needs first, idempotently.

CARGO ?= cargo
DEBIAN_PACKAGES := build-essential pkg-config curl ca-certificates
BENCH_PACKAGES := nginx wrk util-linux procps

.PHONY: run test check lint fmt setup setup-debian setup-toolchain bench-proxy bench-wasm clean plugins

# proxy-wasm filters (plugins/, its own workspace) and the SDK's own example, built for
# wasm32-wasip1; the tests find them through GATEHOUSE_PLUGINS_DIR. Never committed.
PLUGINS_TARGET := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/plugins
export GATEHOUSE_PLUGINS_DIR := $(PLUGINS_TARGET)/wasm32-wasip1/release

## Run the appliance on its embedded default config (standalone, loopback, no cluster).
run: setup
	$(CARGO) run -p gatehouse -- run

## Run the whole test suite (unit, integration, end-to-end against the real binary).
test: setup plugins
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

## Build the WASM plugins and the proxy-wasm SDK's http_headers example (from the published
## crate's source, unmodified) into $(GATEHOUSE_PLUGINS_DIR).
plugins: setup
	cd plugins && $(CARGO) build --release --target wasm32-wasip1 --target-dir $(PLUGINS_TARGET)
	@src=$$($(CARGO) metadata --manifest-path plugins/sdk-example/Cargo.toml --format-version 1 \
	  | grep -o '"manifest_path":"[^"]*/proxy-wasm-0\.2\.0/Cargo\.toml"' | cut -d'"' -f4); \
	test -n "$$src" || { echo "proxy-wasm 0.2.0 source not found"; exit 1; }; \
	rm -rf $(PLUGINS_TARGET)/sdk-src && mkdir -p $(PLUGINS_TARGET)/sdk-src && \
	cp -r "$$(dirname $$src)" $(PLUGINS_TARGET)/sdk-src/proxy-wasm && \
	cd $(PLUGINS_TARGET)/sdk-src/proxy-wasm && \
	$(CARGO) build --release --target wasm32-wasip1 --example http_headers --target-dir $(PLUGINS_TARGET) && \
	cp $(PLUGINS_TARGET)/wasm32-wasip1/release/examples/http_headers.wasm $(GATEHOUSE_PLUGINS_DIR)/sdk_http_headers.wasm

## WASM filter cost: no filter vs native header modifier vs the header-modifier plugin (release).
bench-wasm: setup
	@$(MAKE) --no-print-directory setup-debian DEBIAN_PACKAGES="$(BENCH_PACKAGES)"
	bench/wasm

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
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

clean:
	$(CARGO) clean

## Fuzz every parser of untrusted input, FUZZ_SECONDS each, one target after another (nightly).
## The examples seed the corpora; corpora and crashes stay in fuzz/corpus, fuzz/artifacts.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := manifests config route_table wasm_abi

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
