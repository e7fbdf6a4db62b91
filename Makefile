# The only entry point for building, running and testing Gatehouse.
# Every target installs what it needs first, idempotently.

CARGO ?= cargo
DEBIAN_PACKAGES := build-essential pkg-config curl ca-certificates systemd iproute2 ethtool pebble bind9 bind9-dnsutils
BENCH_PACKAGES := nginx wrk util-linux procps
# bench/xdp's kernel peer: nftables DNAT with conntrack.
XDP_BENCH_PACKAGES := nftables
# The WASM host's instructions per request (callgrind on appliance/wasm/benches/request.rs).
WASM_BENCH_PACKAGES := valgrind
# The appliance image and its boot test (`make image`, tests/tests/e2e/image.rs, bench/boot).
IMAGE_PACKAGES := mmdebstrap e2fsprogs zstd binutils fdisk mtools dosfstools
# From bookworm-backports: bookworm's qemu-system-x86 conflicts with backports' qemu-utils.
IMAGE_BACKPORTS := qemu-system-x86 qemu-utils

.PHONY: run test check lint fmt setup setup-debian setup-toolchain setup-image setup-ebpf plugins bench-proxy bench-acme bench-boot bench-propagation bench-xdp bench-wasm image clean

# proxy-wasm filters (plugins/, its own workspace) and the SDK's own example, built for
# wasm32-wasip1; the tests find them through GATEHOUSE_PLUGINS_DIR. Never committed.
PLUGINS_TARGET := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/plugins
export GATEHOUSE_PLUGINS_DIR := $(PLUGINS_TARGET)/wasm32-wasip1/release

## Run the appliance on its embedded default config (standalone, loopback, no cluster).
run: setup
	$(CARGO) run -p gatehouse -- run

## Run the whole test suite (unit, integration, end-to-end against the real binary).
test: setup setup-image plugins
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

## Propagation: watch event → traffic following, 5,000 routes (release build; not a test).
bench-propagation: setup
	bench/propagation

## Whole-system proxy benchmark against nginx (release build; not part of the tests).
bench-proxy: setup
	@$(MAKE) --no-print-directory setup-debian DEBIAN_PACKAGES="$(BENCH_PACKAGES)"
	bench/proxy

## ACME issuance benchmark against local pebble + bind9 (release build; not part of the tests).
bench-acme: setup
	bench/acme


## The appliance disk image in target/image, from a release build: raw + qcow2 (direct kernel
## boot with vmlinuz + initrd.img) and gatehouse-efi.raw (GPT, systemd-boot, for UEFI machines).
## The Debian base is built once (a few minutes) and cached under /var/tmp/gatehouse-image.
image: setup setup-image
	$(CARGO) build --release -p gatehouse
	images/build.sh --binary $${CARGO_TARGET_DIR:-target}/release/gatehouse --strip --efi --out target/image

## Boot-to-serving time of the image under qemu (release build; not part of the tests).
bench-boot: setup setup-image
	$(CARGO) build --release -p gatehouse
	bench/boot


# qemu from bookworm-backports (the release's own conflicts with backports' qemu-utils). The
# backports source reuses the mirror the machine's bookworm source already names.
setup-image: setup-debian
	@$(MAKE) --no-print-directory setup-debian DEBIAN_PACKAGES="$(IMAGE_PACKAGES)"
	@missing=""; for p in $(IMAGE_BACKPORTS); do \
	  dpkg-query -W -f='$${Status} $${Version}' $$p 2>/dev/null | grep -q "ok installed.*bpo" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if ! apt-get indextargets --format '$$(RELEASE)' | grep -qx bookworm-backports; then \
	    uri=$$(apt-get indextargets --format '$$(REPO_URI) $$(RELEASE)' | awk '$$2=="bookworm" {print $$1; exit}'); \
	    [ -n "$$uri" ] || { echo "no bookworm apt source to derive bookworm-backports from"; exit 1; }; \
	    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$$uri" \
	      > /etc/apt/sources.list.d/bookworm-backports.sources; \
	  fi; \
	  echo "installing from bookworm-backports:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports $$missing) >/dev/null; \
	fi
## XDP program ns/packet via BPF_PROG_TEST_RUN, and packets/s through a VIP on veth against
## nftables DNAT (root; release build; not part of the tests).
bench-xdp: setup
	@$(MAKE) --no-print-directory setup-debian DEBIAN_PACKAGES="$(XDP_BENCH_PACKAGES)"
	bench/xdp


## Build the WASM plugins and the proxy-wasm SDK's http_headers and http_auth_random examples
## (from the published crate's source, unmodified) into $(GATEHOUSE_PLUGINS_DIR).
plugins: setup
	cd plugins && $(CARGO) build --release --target wasm32-wasip1 --target-dir $(PLUGINS_TARGET)
	@src=$$($(CARGO) metadata --manifest-path plugins/sdk-example/Cargo.toml --format-version 1 \
	  | grep -o '"manifest_path":"[^"]*/proxy-wasm-0\.2\.0/Cargo\.toml"' | cut -d'"' -f4); \
	test -n "$$src" || { echo "proxy-wasm 0.2.0 source not found"; exit 1; }; \
	rm -rf $(PLUGINS_TARGET)/sdk-src && mkdir -p $(PLUGINS_TARGET)/sdk-src && \
	cp -r "$$(dirname $$src)" $(PLUGINS_TARGET)/sdk-src/proxy-wasm && \
	cd $(PLUGINS_TARGET)/sdk-src/proxy-wasm && \
	printf '\n# its own workspace, even under this repository'"'"'s target/\n[workspace]\n' >> Cargo.toml && \
	$(CARGO) build --release --target wasm32-wasip1 --example http_headers --example http_auth_random \
	  --target-dir $(PLUGINS_TARGET) && \
	for e in http_headers http_auth_random; do \
	  cp $(PLUGINS_TARGET)/wasm32-wasip1/release/examples/$$e.wasm $(GATEHOUSE_PLUGINS_DIR)/sdk_$$e.wasm; \
	done

## WASM filter cost: no filter vs native header modifier vs the header-modifier plugin (release).
bench-wasm: setup
	@$(MAKE) --no-print-directory setup-debian DEBIAN_PACKAGES="$(BENCH_PACKAGES) $(WASM_BENCH_PACKAGES)"
	bench/wasm

# What building needs; the test suite also needs the image tools (setup-image) and the plugins.
setup: setup-debian setup-toolchain setup-ebpf

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

## The XDP program (ebpf/xdp) is built by appliance/xdp's build.rs with the nightly toolchain,
## its rust-src (core is rebuilt for the BPF target) and bpf-linker 0.13.0, which is built
## against the nightly's own libLLVM 22 (LLVM_PREFIX: a directory whose lib/libLLVM.so is it).
BPF_LINKER_VERSION := 0.13.0
BPF_LLVM_PREFIX ?= $(HOME)/.cache/gatehouse/llvm-nightly
setup-ebpf:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@rustup component list --toolchain nightly --installed | grep -q '^rust-src' || rustup component add rust-src --toolchain nightly
	@rustup run nightly bpf-linker --version 2>/dev/null | grep -q '$(BPF_LINKER_VERSION)' || { \
	  llvm=$$(ls "$$(rustup run nightly rustc --print sysroot)"/lib/libLLVM.so.22* | head -n 1); \
	  test -n "$$llvm" || { echo "the nightly toolchain has no libLLVM.so.22*"; exit 1; }; \
	  mkdir -p $(BPF_LLVM_PREFIX)/lib && ln -sf "$$llvm" $(BPF_LLVM_PREFIX)/lib/libLLVM.so; \
	  echo "building bpf-linker $(BPF_LINKER_VERSION) against $$llvm (a few minutes)"; \
	  LLVM_PREFIX=$(BPF_LLVM_PREFIX) CARGO_TARGET_DIR=$${TMPDIR:-/tmp}/bpf-linker-build \
	    rustup run nightly cargo install --locked --version $(BPF_LINKER_VERSION) \
	    --no-default-features --features llvm-22 bpf-linker; }

clean:
	$(CARGO) clean

## Fuzz every parser of untrusted input, FUZZ_SECONDS each, one target after another (nightly).
## The examples seed the corpora; corpora and crashes stay in fuzz/corpus, fuzz/artifacts.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := manifests config route_table ipam wasm_abi client_hello

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
