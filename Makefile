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
# The suites write their reports under $(REPORTS)/<provider>, where the readers look (`make test REPORTS=DIR`).
# The kind suites run their trials on fleets kept apart from a user's (one per topology, made by the first trial,
# reset and proved clean by each); KIND_FLEETS_DOWN removes them afterwards, whatever happened.
SUITE_FLEETS = $$(source tools/lib/cache.sh && echo "$$meshconf_cache/suite-fleets")
KIND_SUITES = MESHCONF_SUITE_REPORTS="$(abspath $(REPORTS))/kind" MESHCONF_FLEETS_DIR="$(SUITE_FLEETS)" MESHCONF_PROVIDER=kind $(CARGO) test --workspace --test multi_primary --test primary_remote
KIND_FLEETS_DOWN = MESHCONF_FLEETS_DIR="$(SUITE_FLEETS)" timeout --kill-after=10 600 \
  "$$($(CARGO) metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/meshconf" fleet down --all
# The rehearsal's fleet trial keeps its fleet apart too (kind's fleet down never waits on it) and takes it down
# itself; KWOK_FLEETS_DOWN is the net under an interrupted one.
KWOK_SUITES = MESHCONF_SUITE_REPORTS="$(abspath $(REPORTS))/kwok" MESHCONF_FLEETS_DIR="$(SUITE_FLEETS)-kwok" MESHCONF_TOOLS_BIN="$$(bash tools/build.sh)" MESHCONF_PROVIDER=kwok $(CARGO) test --workspace --test multi_primary --test primary_remote
KWOK_FLEETS_DOWN = MESHCONF_FLEETS_DIR="$(SUITE_FLEETS)-kwok" timeout --kill-after=10 300 \
  "$$($(CARGO) metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/meshconf" fleet down --all

.PHONY: all build test test-rehearsal unit suites rehearse prepare rehearsal-tools conformance tools images engine engine-down bench bench-plan matrix lint report clean doctor

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

## Unit, snapshot and mock-API tests; then both suites on the kwok rehearsal beside a Docker engine, every image of
## the kind path (cached) and both suites on kind (the rehearsal mostly waits on its control planes, so it runs
## alongside; its output is printed when it ends, from $(REPORTS)/kwok/suites.log); every report read by
## third-party readers (junitparser against its JSON record and schema, each HTML page in headless Chromium).
## Everything the tests need is prepared first, the Go builds beside the apt and debootstrap work
## (tools/prepare.sh). meshconf's engine is stopped at the end, whatever happened. CI runs exactly this.
KWOK_LOG = $(REPORTS)/kwok/suites.log
KIND_LOG = $(REPORTS)/kind/suites.log
# The Rust build runs beside the Go tools and the Debian work (tools/prepare.sh): their downloads and links leave
# the CPUs idle part of the time, and the tests need both only once both are done.
RUST_BUILD_LOG = $(REPORTS)/rust-build.log
test:
	@status=0; kwok_status=0; mkdir -p $(REPORTS); \
	echo "rust build: beside the tools, output in $(RUST_BUILD_LOG)"; \
	( $(CARGO) test --workspace --no-run && \
	  $(CARGO) test --workspace --test multi_primary --test primary_remote --no-run ) >$(RUST_BUILD_LOG) 2>&1 & build_pid=$$!; \
	bash tools/prepare.sh kind || status=$$?; \
	wait $$build_pid || { status=$$?; echo "rust build failed:"; tail -n 40 $(RUST_BUILD_LOG); }; \
	if [ $$status -eq 0 ]; then $(CARGO) test --workspace || status=$$?; fi; \
	if [ $$status -eq 0 ]; then \
	  mkdir -p $(REPORTS)/kwok; echo "kwok suites: running beside the kind path, output in $(KWOK_LOG)"; \
	  ( st=0; $(KWOK_SUITES) || st=$$?; $(KWOK_FLEETS_DOWN) || st=$$?; \
	    [ $$st -eq 0 ] && bash tools/readers.sh $(REPORTS)/kwok || exit $$(( st ? st : 1 )) ) >$(KWOK_LOG) 2>&1 & kwok_pid=$$!; \
	  $(MAKE) --no-print-directory images || status=$$?; \
	  if [ $$status -eq 0 ]; then mkdir -p $(REPORTS)/kind; set -o pipefail; $(KIND_SUITES) 2>&1 | tee $(KIND_LOG) || status=$$?; $(KIND_FLEETS_DOWN) || status=$$?; fi; \
	  if [ $$status -eq 0 ]; then bash tools/readers.sh $(REPORTS)/kind || status=$$?; fi; \
	  wait $$kwok_pid || kwok_status=$$?; \
	  echo "== kwok suites (exit $$kwok_status), from $(KWOK_LOG):"; cat $(KWOK_LOG); \
	  [ $$status -eq 0 ] && status=$$kwok_status; \
	fi; \
	bash tools/engine.sh down; [ $$status -eq 0 ] || bash tools/failures.sh $(KIND_LOG) $(KWOK_LOG); exit $$status

## Only the rehearsal part of `make test` (no Docker): unit tests, both suites on kwok, readers.
test-rehearsal:
	bash tools/prepare.sh rehearsal
	$(CARGO) test --workspace
	@status=0; $(KWOK_SUITES) || status=$$?; $(KWOK_FLEETS_DOWN) || status=$$?; \
	if [ $$status -eq 0 ]; then bash tools/readers.sh $(REPORTS)/kwok || status=$$?; fi; exit $$status

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
	if [ $$status -eq 0 ]; then mkdir -p $(REPORTS)/kind; set -o pipefail; $(KIND_SUITES) 2>&1 | tee $(KIND_LOG) || status=$$?; $(KIND_FLEETS_DOWN) || status=$$?; fi; \
	if [ $$status -eq 0 ]; then bash tools/readers.sh $(REPORTS)/kind || status=$$?; fi; \
	bash tools/engine.sh down; [ $$status -eq 0 ] || bash tools/failures.sh $(KIND_LOG) $(KWOK_LOG); exit $$status

doctor:
	$(CARGO) run -q -p meshconf -- doctor

## multi-primary on kind fresh, on a new fleet, on the reused fleet and reused with --serial, in one run: a table
## of phase times with the ratios fresh/reused and serial/parallel (reports/bench/table.txt). Stops meshconf's
## engine at the end.
bench: images
	@status=0; \
	DOCKER_HOST="$$(bash tools/engine.sh up 2>/dev/null | tail -n1)" bash tools/bench.sh || status=$$?; \
	bash tools/engine.sh down; [ $$status -eq 0 ] || bash tools/failures.sh $(KIND_LOG) $(KWOK_LOG); exit $$status

## Every scenario on the older Istio line (1.31-dev) and on the default one (1.32-dev), each on its topology's
## fleet, then `meshconf compare` of the two (reports/matrix/; a regression exits 1). MATRIX_PROVIDER=kwok
## rehearses it without Docker; MATRIX_BASELINE / MATRIX_CANDIDATE pick other builds. Stops meshconf's engine at
## the end.
matrix:
	@status=0; \
	if [ "$${MATRIX_PROVIDER:-kind}" = kind ]; then \
	  bash tools/prepare.sh kind || status=$$?; \
	  if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory images || status=$$?; fi; \
	  if [ $$status -eq 0 ]; then \
	    DOCKER_HOST="$$(bash tools/engine.sh up 2>/dev/null | tail -n1)" bash tools/matrix.sh $(MATRIX_SCENARIOS) || status=$$?; \
	  fi; \
	  bash tools/engine.sh down; \
	else \
	  bash tools/prepare.sh rehearsal && bash tools/matrix.sh $(MATRIX_SCENARIOS) || status=$$?; \
	fi; exit $$status

## Plan building and rendering (criterion).
bench-plan:
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
