# waggle's build. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
REDOCLY := tools/node_modules/.bin/redocly
SPECTRAL := tools/node_modules/.bin/spectral
export REDOCLY_TELEMETRY := off
export REDOCLY_SUPPRESS_UPDATE_NOTICE := true

# Fuzz targets run briefly inside `make test`; FUZZTIME is a count of inputs per target (see scripts/fuzz-all.sh).
FUZZTIME ?= 20000x
# `make fuzz-long` runs each target for a duration instead, before a release (not part of CI).
FUZZLONG ?= 4m

.PHONY: help build test deps unit compat fuzz fuzz-long check lint-openapi generate guests tools demo demo-server bench bench-migrate bench-start clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/waggle
	$(GO) build -o bin/waggle ./cmd/waggle

tools: $(REDOCLY) ## install the Node tools the checks use (pinned in tools/package-lock.json)

$(REDOCLY): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: deps check ## everything CI runs: checks, the compatibility gate, unit and KVM tests, short fuzz runs; ends with the test count
	@$(MAKE) --no-print-directory compat
	@$(MAKE) --no-print-directory unit SUMMARY=0
	@$(MAKE) --no-print-directory fuzz
	@scripts/count-tests.sh .test-output.txt | tail -2

deps: ## install the Debian packages the tests use where missing (curl, binutils, postgresql), with apt-get
	@scripts/deps.sh

unit: ## go test over every package (KVM tests skip with the reason where /dev/kvm is missing)
	@status=0; $(GO) test -count=1 -v ./... >.test-output.txt 2>&1 || status=$$?; \
	if [ $$status != 0 ]; then grep -B3 -A25 -E '^\s*--- FAIL|^panic:|^FAIL' .test-output.txt | head -300; fi; \
	scripts/count-tests.sh .test-output.txt >.test-summary.txt || status=1; \
	if [ "$(SUMMARY)" != 0 ] || [ $$status != 0 ]; then cat .test-summary.txt; else grep -E '^(ok|FAIL)' .test-summary.txt; fi; \
	rm -f .test-summary.txt; exit $$status

compat: ## the compatibility gate: contracts locked, breaking changes declared, corpus complete, unchanged, fresh and replayed, releases built
	$(GO) run ./cmd/compat

fuzz: ## run every fuzz target for FUZZTIME
	@scripts/fuzz-all.sh $(FUZZTIME)

fuzz-long: ## before a release: every fuzz target for FUZZLONG (default 4m) each; findings land in testdata/fuzz
	@scripts/fuzz-all.sh $(FUZZLONG)

check: tools ## gofmt, go vet, generated code and guest images fresh, contracts valid and LOCK honoured
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run ./cmd/apicheck lock
	$(GO) run ./cmd/apicheck validate
	@$(MAKE) --no-print-directory lint-openapi
	@scripts/check-generated.sh
	@scripts/check-guests.sh

lint-openapi: tools ## lint every contract with Redocly's recommended and Spectral's oas rules (any warning fails)
	@for f in openapi/*/v*.yaml; do \
	  $(REDOCLY) lint --extends=recommended-strict --format=summary "$$f" >.lint-output.txt 2>&1 || { cat .lint-output.txt; exit 1; }; \
	  $(SPECTRAL) lint --quiet --fail-severity=warn "$$f" || exit 1; \
	  echo "lint $$f: Redocly recommended and Spectral oas, 0 errors, 0 warnings"; \
	done; rm -f .lint-output.txt

generate: ## regenerate gen/ from openapi/ with the pinned oapi-codegen
	$(GO) generate ./gen/...

guests: ## rebuild the guest images in vmm/guest/
	vmm/guest/build.sh vmm/guest

demo: build ## the whole stack from nothing: control plane (embedded PostgreSQL), two sled agents, an instance created, started, migrated while it ticks, stopped, deleted
	scripts/demo-fleet.sh

demo-server: build ## one VMM server on loopback: boot the ticker from examples/, show its console, stop it
	scripts/demo.sh

bench-migrate: ## live-migration benchmarks: the stream without KVM (guests of 1 and 4 GiB, every page written; huge and 4 KiB pages; beside loopback); ticker guests (256 MiB, 1 GiB; idle, dirtying) and written memcheck guests (1, 4 GiB) beside loopback TCP and QEMU, written rows beside the aims
	$(GO) test -count=1 -run '^$$' -bench BenchmarkMigrate -benchtime 1x ./cmd/waggle | grep -v '^ *time='
	$(GO) test -count=1 -run '^$$' -bench BenchmarkMigrateWrittenRAM -benchtime 5x ./server

bench-start: ## VM start breakdown: PUT /instance + run to the first serial byte, by phase, beside the 5 ms aim
	$(GO) test -count=1 -run '^$$' -bench BenchmarkStartBreakdown -benchtime 20x ./server

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

clean: ## remove build output
	rm -rf bin .test-output.txt
