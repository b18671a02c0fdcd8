# meshconf: conformance harness for multicluster Istio installs.
# `make test` is the README's test command (CI runs exactly it); `make rehearse` is the main job on machines
# without Docker; `make conformance` is the real kind run.

SHELL := /bin/bash
CARGO ?= cargo
REPORTS ?= reports
PORT_BASE ?= 31000
SCENARIOS := scenarios/multi-primary.yaml scenarios/primary-remote.yaml
TOOLS_BIN = $(shell bash tools/build.sh)

.PHONY: all build test unit suites rehearse conformance tools bench lint report clean doctor

all: build

build:
	$(CARGO) build --workspace --release

## Rehearsal binaries (etcd, kube-apiserver, kwok, istioctl, istiod, MetalLB) from the Go module proxy, cached
## outside the clone; a second run is a no-op.
tools:
	@bash tools/build.sh

## Unit, snapshot and mock-API tests, then both suites end to end on the kwok rehearsal.
test: tools
	$(CARGO) test --workspace
	MESHCONF_TOOLS_BIN="$(TOOLS_BIN)" MESHCONF_PROVIDER=kwok $(CARGO) test --test multi_primary --test primary_remote

unit:
	$(CARGO) test --workspace

## Main job here: a rehearsal of both scenarios with progress and a summary (reports in $(REPORTS)/).
rehearse: tools
	$(CARGO) build --release -p meshconf
	@status=0; for s in $(SCENARIOS); do \
	  MESHCONF_TOOLS_BIN="$(TOOLS_BIN)" ./target/release/meshconf run $$s --provider kwok --port-base $(PORT_BASE) --report-dir $(REPORTS) || status=$$?; \
	done; exit $$status

## The real conformance run on kind (needs Docker, kind and istioctl; see `meshconf doctor`).
conformance:
	MESHCONF_PROVIDER=kind $(CARGO) test --test multi_primary --test primary_remote

doctor:
	$(CARGO) run -q -p meshconf -- doctor

bench:
	$(CARGO) bench -p meshconf

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

report:
	@ls -1 $(REPORTS)/*.junit.xml 2>/dev/null || echo "no reports yet: run make rehearse"

clean:
	$(CARGO) clean
	rm -f $(REPORTS)/*.xml $(REPORTS)/*.json
