# cryo: OCI runtime, native checkpoint/restore engine and containerd shim.
# Conventions follow containerd's Makefile: TESTFLAGS and GOTEST tune the test runs.

GO        ?= go
GOTEST    ?= $(GO) test
TESTFLAGS ?=
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
DESTDIR   ?=
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PACKAGES   = $(shell $(GO) list ./... | grep -v /integration)
BINARIES   = bin/cryo bin/containerd-shim-cryo-v2
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all binaries build test unit-test root-test integration bench demo install uninstall \
	clean help fuzz lint verify-mod FORCE

all: binaries ## build bin/cryo and bin/containerd-shim-cryo-v2

binaries: $(BINARIES) ## build the binaries into bin/

build: ## compile every package
	$(GO) build ./...

bin/cryo: FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/cryo

bin/containerd-shim-cryo-v2: FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/containerd-shim-cryo-v2

test: binaries ## run every test: unit, root (engine, runtime) and integration (real containerd)
	$(GOTEST) -count=1 -p 1 -timeout 60m $(TESTFLAGS) ./...

unit-test: ## run the tests that need neither root nor a daemon
	$(GOTEST) -count=1 -short $(TESTFLAGS) $(PACKAGES)

root-test: binaries ## run the unit and root tests, without integration
	$(GOTEST) -count=1 -p 1 $(TESTFLAGS) $(PACKAGES)

integration: binaries ## run the black-box tests against real binaries and a real containerd
	$(GOTEST) -count=1 -p 1 -timeout 60m $(TESTFLAGS) ./integration/...

bench: binaries ## run the benchmarks (container checkpoint/restore/stall, lifecycle vs runc, engine, oci) and print a table
	GO=$(GO) ./docs/bench.sh

demo: binaries ## run a container, checkpoint it, restore it and show it continuing
	./docs/demo.sh

fuzz: ## run each fuzz target for a short while
	@for p in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$p 2>/dev/null | grep '^Fuzz'); do \
			$(GOTEST) -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$p || exit 1; \
		done; \
	done

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

verify-mod: ## check that go.mod and go.sum are tidy
	$(GO) mod tidy -diff

install: binaries ## install the binaries into $(DESTDIR)$(BINDIR)
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(BINARIES) $(DESTDIR)$(BINDIR)/

uninstall: ## remove the installed binaries
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(BINARIES)))

clean: ## remove build outputs
	rm -rf bin

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
