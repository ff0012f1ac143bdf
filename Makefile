# qase-sync — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
PRISM_VERSION := 5.16.0
TOOLS := $(CURDIR)/.tools
PRISM := $(TOOLS)/prism/node_modules/.bin/prism
# playwright-core drives Debian's chromium in the status page's browser test.
PLAYWRIGHT_VERSION := 1.65.1
PLAYWRIGHT := $(TOOLS)/playwright/node_modules/playwright-core/package.json
CHROMIUM ?= /usr/bin/chromium
CONFIG ?= config.example.yaml
# An execution count, not a duration: with a duration, go1.26's fuzz
# coordinator can fail a clean run with a bare "context deadline exceeded"
# at its end when the machine is loaded (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 60000x
# make bench: interleaved rounds, seconds per closed-loop run, the fixed
# rate and its length, reconcile keys, PostgreSQL admin DSN (empty skips it).
BENCH_ROUNDS ?= 3
BENCH_DURATION ?= 8s
BENCH_RATE ?= 1000
BENCH_RATE_DURATION ?= 20s
BENCH_DRAIN ?= 15s
BENCH_KEYS ?= 10000
BENCH_PG ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
BENCH_FLAGS ?=
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.DEFAULT_GOAL := help

help: ## Show this help
	@if [ -t 1 ]; then on=$$'\033[36m' off=$$'\033[0m'; else on= off=; fi; \
	awk -v on="$$on" -v off="$$off" -v prism="$(PRISM_VERSION)" -v fuzz="$(FUZZTIME)" -v version="$(VERSION)" -v pw="$(PLAYWRIGHT_VERSION)" 'BEGIN {FS = ":.*##"} \
		/^[a-zA-Z_-]+:.*##/ {d = $$2; gsub(/\$$\(PRISM_VERSION\)/, prism, d); gsub(/\$$\(FUZZTIME\)/, fuzz, d); gsub(/\$$\(VERSION\)/, version, d); gsub(/\$$\(PLAYWRIGHT_VERSION\)/, pw, d); \
		printf "  %s%-10s%s %s\n", on, $$1, off, d}' $(MAKEFILE_LIST)

build: ## Build bin/qase-sync (static, CGO off); add bin/ to PATH or `go install ./cmd/qase-sync`
	@echo "building bin/qase-sync (a first build downloads modules and compiles SQLite: a few minutes; packages are listed as they compile)" >&2
	CGO_ENABLED=0 $(GO) build -v -trimpath -ldflags '$(LDFLAGS)' -o bin/qase-sync ./cmd/qase-sync

run: build ## Build, then serve CONFIG (default config.example.yaml) on :8080 or QASE_SYNC_LISTEN
	./bin/qase-sync serve -c $(CONFIG)

tools: $(PRISM) $(PLAYWRIGHT) $(CHROMIUM) ## Install test tools: Prism $(PRISM_VERSION) and playwright-core $(PLAYWRIGHT_VERSION) from npm into .tools/, Debian's chromium

$(PRISM):
	@mkdir -p $(TOOLS)/prism
	cd $(TOOLS)/prism && { [ -f package.json ] || npm init -y >/dev/null; } && \
		npm install --no-audit --no-fund --loglevel=error @stoplight/prism-cli@$(PRISM_VERSION) >/dev/null
	@test -x $(PRISM)

$(PLAYWRIGHT):
	@mkdir -p $(TOOLS)/playwright
	cd $(TOOLS)/playwright && { [ -f package.json ] || npm init -y >/dev/null; } && \
		npm install --no-audit --no-fund --loglevel=error playwright-core@$(PLAYWRIGHT_VERSION) >/dev/null
	@test -f $(PLAYWRIGHT)

$(CHROMIUM):
	@echo "installing Debian's chromium for the status page's browser test (apt-get)" >&2
	@sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		{ $$sudo apt-get update >/dev/null && $$sudo apt-get install -y --no-install-recommends chromium >/dev/null; }
	@test -x $(CHROMIUM)

test: tools ## Run every test (race detector, contract tests against Prism, the status page in Chromium, short fuzzing)
	$(GO) mod download
	QASE_SYNC_REQUIRE_PRISM=1 QASE_SYNC_REQUIRE_BROWSER=1 QASE_SYNC_CHROMIUM=$(CHROMIUM) $(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz

fuzz: ## Fuzz the webhook decoder, the config and mapping loaders, conditions (FUZZTIME inputs each, default 60000x)
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./adapters/qase
	$(GO) test -run='^$$' -fuzz=FuzzConfigParse -fuzztime=$(FUZZTIME) ./config
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./mapping
	$(GO) test -run='^$$' -fuzz=FuzzCond -fuzztime=$(FUZZTIME) ./mapping

lint: ## gofmt, go vet, the import rules and the import aliases
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -run 'TestImport(Rules|Aliases)' ./cmd/qase-sync

bench: build ## End-to-end benchmark (~15 min; BENCH_ROUNDS, BENCH_DURATION, BENCH_KEYS…): the real binary, load from a separate process; writes docs/benchmarks.md
	CGO_ENABLED=0 $(GO) build -o bin/e2ebench ./internal/e2ebench
	QASE_SYNC_READCOST_OUT=$(CURDIR)/.readcost.out $(GO) test -count=1 -run='^TestRecReadCost$$' ./cmd/qase-sync
	./bin/e2ebench -bin bin/qase-sync -rounds $(BENCH_ROUNDS) -duration $(BENCH_DURATION) -rate $(BENCH_RATE) \
		-rate-duration $(BENCH_RATE_DURATION) -drain $(BENCH_DRAIN) -reconcile-keys $(BENCH_KEYS) -pg '$(BENCH_PG)' \
		-readcost .readcost.out $(BENCH_FLAGS) -out docs/benchmarks.md
	@cat docs/benchmarks.md

docker: ## Build the container image qase-sync:$(VERSION)
	docker build -t qase-sync:$(VERSION) --build-arg VERSION=$(VERSION) .

clean: ## Remove build output and local tools
	rm -rf bin .tools .bench.out .readcost.out .artifacts

.PHONY: help build run tools test fuzz lint bench docker clean
