# Tandem — the targets people expect. `make demo` and `make test` are the two
# the README names; both run as root on a Debian machine.

GO        ?= go
BIN       ?= bin
GOTESTFLAGS ?=
# Packages whose tests are pure Go and cheap enough to run under the race detector.
RACE_PKGS ?= ./hashing/... ./cluster/... ./ctl/... ./flow/standby/...

.PHONY: all deps build test test-unit generate generate-check lint bench demo chaos lab-bins lab-up lab-down clean

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

## lab-bins: build tandemd, clusterctl and the lab's tools (tandem-lab, labbackend, trafficcheck, chaos) into ./bin.
LAB ?= tlab
LAB_STATE = /run/tandem-lab/$(LAB)
lab-bins:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./node/cmd/tandemd ./ctl/cmd/clusterctl ./deploy/lab/cmd/tandem-lab ./test/cmd/labbackend ./test/cmd/trafficcheck ./test/cmd/chaos

## lab-up: bring the lab (LAB=tlab) up with tandemd on 4 nodes and apply its example cluster.yaml (root).
lab-up: lab-bins
	$(BIN)/tandem-lab -name $(LAB) -tandemd $(BIN)/tandemd -backend $(BIN)/labbackend up
	@for i in $$(seq 1 60); do \
		$(BIN)/clusterctl --node $(LAB_STATE)/n1/tandemd.sock apply -f $(LAB_STATE)/cluster.yaml >/dev/null 2>&1 && break; sleep 0.5; \
	done
	$(BIN)/clusterctl --node $(LAB_STATE)/n1/tandemd.sock show lb vserver
	@echo "try: $(BIN)/trafficcheck -netns $(LAB)-client -lab-clients 16 -target stateless=198.19.0.10:80 -target stateless=[fd00:7a6d:ff::10]:80"

## lab-down: tear the lab (LAB=tlab) down, also after a crash.
lab-down:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./deploy/lab/cmd/tandem-lab
	$(BIN)/tandem-lab -name $(LAB) down

## demo: as root on a fresh machine: deps, build, a 4-node lab, IPv4+IPv6 stateless vservers, traffic, SIGKILL a node, the survival table; tears down; fails if a flow broke.
demo: deps lab-bins
	$(BIN)/chaos -name tdemo -bin $(BIN) -demo

## chaos: every chaos scenario on one lab under live traffic (root): kill9, freeze and linkdown of each node in turn, drain, rolling, and for the stateful vservers (USIP ON and OFF) pairloss and synack; then the application scenarios (SSL_BRIDGE and FTP; CHAOS_APPS_FLAGS=-ftp=false skips FTP) on another lab.
CHAOS_APPS_FLAGS ?=
chaos: deps lab-bins
	$(BIN)/chaos -name tchaos -bin $(BIN) -each
	$(GO) build -o $(BIN)/ ./test/cmd/chaosapps
	$(BIN)/chaosapps -name tzapps -bin $(BIN) $(CHAOS_APPS_FLAGS)

clean:
	rm -rf $(BIN)

help:
	@grep -E '^## ' Makefile | sed 's/^## //'
