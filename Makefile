# meshconf: conformance harness for multicluster Istio installs.
# `make test` is the README's test command (CI runs exactly it); `make rehearse` is the main job on machines
# without Docker; `make conformance` is the real kind run.
# The kind path on machines where no registry answers: `make engine` finds a Docker engine or starts meshconf's
# own, `make images` builds every image from pinned sources; both cache outside the clone.

SHELL := /bin/bash
CARGO ?= cargo
REPORTS ?= reports
PORT_BASE ?= 31000
SCENARIOS := scenarios/multi-primary.yaml scenarios/primary-remote.yaml
TOOLS_BIN = $(shell bash tools/build.sh)
# --workspace: the same feature set as `cargo test --workspace` (dev-dependencies included), so the suites reuse
# its build instead of compiling ~50 crates again with other features (111 s cold, measured).
KIND_SUITES = MESHCONF_PROVIDER=kind $(CARGO) test --workspace --test multi_primary --test primary_remote
KWOK_SUITES = MESHCONF_TOOLS_BIN="$$(bash tools/build.sh)" MESHCONF_PROVIDER=kwok $(CARGO) test --workspace --test multi_primary --test primary_remote

.PHONY: all build test test-rehearsal unit suites rehearse prepare rehearsal-tools conformance tools images engine engine-down bench lint report clean doctor

all: build

build:
	$(CARGO) build --workspace --release

## Binaries (etcd, Kubernetes, kwok, kind, istioctl, istiod, pilot-agent, MetalLB, CoreDNS) from the Go module
## proxy, and every image of the kind path; cached outside the clone, a second run is a no-op.
tools: images

## Everything `make test` needs before its first test (Go binaries, apt packages, rootfs trees, readers), the
## CPU-bound and the network-bound work side by side; a no-op when warm. Handy for baking a CI machine image.
prepare:
	@bash tools/prepare.sh kind

## Only what the kwok rehearsal needs (no Docker).
rehearsal-tools:
	@bash tools/build.sh >/dev/null

## A Docker engine: the one that answers (yours), else meshconf's own under the cache (installs docker.io if needed).
engine:
	@bash tools/engine.sh up >/dev/null

## Stop meshconf's engine (never yours) and remove the host state it added.
engine-down:
	@bash tools/engine.sh down

## The kind path's images (node image, Kubernetes parts, MetalLB, Istio with upstream Envoy, samples).
images: engine
	@DOCKER_HOST="$$(bash tools/engine.sh up 2>/dev/null | tail -n1)" bash tools/images.sh >/dev/null

## Unit, snapshot and mock-API tests; both suites on the kwok rehearsal; then a Docker engine and every image of
## the kind path (cached), both suites on kind; every report read by third-party readers (junitparser against
## its JSON record and schema, each HTML page in headless Chromium). Everything the tests need is prepared first,
## the Go builds beside the apt and debootstrap work (tools/prepare.sh). meshconf's engine is stopped at the end,
## whatever happened. CI runs exactly this.
test:
	@status=0; \
	bash tools/prepare.sh kind || status=$$?; \
	if [ $$status -eq 0 ]; then $(CARGO) test --workspace || status=$$?; fi; \
	if [ $$status -eq 0 ]; then $(KWOK_SUITES) || status=$$?; fi; \
	if [ $$status -eq 0 ]; then bash tools/readers.sh $(REPORTS)/kwok || status=$$?; fi; \
	if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory images || status=$$?; fi; \
	if [ $$status -eq 0 ]; then $(KIND_SUITES) || status=$$?; fi; \
	if [ $$status -eq 0 ]; then bash tools/readers.sh $(REPORTS)/kind || status=$$?; fi; \
	bash tools/engine.sh down; exit $$status

## Only the rehearsal part of `make test` (no Docker): unit tests, both suites on kwok, readers.
test-rehearsal:
	bash tools/prepare.sh rehearsal
	$(CARGO) test --workspace
	$(KWOK_SUITES)
	bash tools/readers.sh $(REPORTS)/kwok

unit:
	$(CARGO) test --workspace

## Main job here: a rehearsal of both scenarios with progress and a summary (reports in $(REPORTS)/).
rehearse: rehearsal-tools
	$(CARGO) build --release -p meshconf
	@status=0; for s in $(SCENARIOS); do \
	  MESHCONF_TOOLS_BIN="$(TOOLS_BIN)" ./target/release/meshconf run $$s --provider kwok --port-base $(PORT_BASE) --report-dir $(REPORTS) || status=$$?; \
	done; exit $$status

## The real conformance run on kind with images built here (with a registry at hand, run the suites directly:
## without `make images` the kind provider uses released images). Stops meshconf's engine at the end, whatever
## happened.
conformance:
	@status=0; \
	bash tools/prepare.sh kind || status=$$?; \
	if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory images || status=$$?; fi; \
	if [ $$status -eq 0 ]; then $(KIND_SUITES) || status=$$?; fi; \
	if [ $$status -eq 0 ]; then bash tools/readers.sh $(REPORTS)/kind || status=$$?; fi; \
	bash tools/engine.sh down; exit $$status

doctor:
	$(CARGO) run -q -p meshconf -- doctor

bench:
	$(CARGO) bench -p meshconf

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --test multi_primary --test primary_remote -- -D warnings  # test = false: not in --all-targets

report:
	@ls -1 $(REPORTS)/*.junit.xml 2>/dev/null || echo "no reports yet: run make rehearse"

clean:
	$(CARGO) clean
	rm -rf $(REPORTS)/*.xml $(REPORTS)/*.json $(REPORTS)/*.html $(REPORTS)/*.png $(REPORTS)/*.diagnostics \
	  $(REPORTS)/kind $(REPORTS)/kwok $(REPORTS)/existing
