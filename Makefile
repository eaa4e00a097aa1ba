# Tandem — the targets people expect. `make demo` and `make test` are the two
# the README names; both run as root on a Debian machine.

GO        ?= go
BIN       ?= bin
GOTESTFLAGS ?=
# Packages whose tests are pure Go and cheap enough to run under the race detector.
RACE_PKGS ?= ./hashing/... ./cluster/... ./ctl/... ./flow/standby/...

.PHONY: all deps build test test-unit generate generate-check lint bench demo chaos clean

all: build

## deps: install the Debian packages builds and tests need (idempotent).
deps:
	@bash deploy/install-deps.sh

## build: build tandemd and clusterctl into ./bin.
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./node/cmd/tandemd ./ctl/cmd/clusterctl

## test: everything CI runs: vet, generated code up to date, unit, BPF and end-to-end tests.
test: deps generate-check
	$(GO) vet ./...
	$(GO) test -count=1 -race -timeout 15m $(GOTESTFLAGS) $(RACE_PKGS)
	$(GO) test -count=1 -timeout 30m $(GOTESTFLAGS) ./...

## test-unit: tests that need neither root nor BPF.
test-unit:
	$(GO) test -count=1 -short ./...

## generate: regenerate the bpf2go bindings and objects (needs clang).
generate:
	$(GO) generate ./flow/...

## generate-check: fail if regenerating the BPF objects changes anything.
generate-check: generate
	@git diff --exit-code -- flow/ || { echo "generated BPF code is stale: run 'make generate' and commit" >&2; exit 1; }

## lint: go vet and staticcheck.
lint:
	$(GO) vet ./...
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$$( $(GO) env GOPATH )/bin/staticcheck ./...

## bench: data-plane and hashing benchmarks (as root for the BPF ones).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./hashing/... ./flow/... ./cluster/...

clean:
	rm -rf $(BIN)

help:
	@grep -E '^## ' Makefile | sed 's/^## //'
