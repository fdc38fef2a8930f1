# MSE in Go. `make demo` runs the whole deploy flow on this machine; `make test` runs the suite.
GO      ?= go
BIN     ?= bin
PKG     := github.com/mse-in-go/mse
export CGO_ENABLED := 0

.PHONY: build demo test test-short bench fuzz clean examples

# Reproducible builds (no VCS stamp, no build id), as scripts/node-image.sh
# builds the node image: on linux/amd64, bin/mse-node is byte for byte the
# image's /mse-node, so both have one measurement.
REPRO   := -trimpath -buildvcs=false -ldflags=-buildid=

# mse-node is built first: the CLI's default trust policy accepts exactly the
# measurement (SHA-256) of the mse-node built with it.
build:
	$(GO) build $(REPRO) -o $(BIN)/mse-node ./cmd/mse-node
	$(GO) build -trimpath -o $(BIN)/mse-backend ./cmd/mse-backend
	M=$$(sha256sum $(BIN)/mse-node | cut -d' ' -f1); \
	$(GO) build -trimpath -ldflags "-X $(PKG)/internal/cli.NodeMeasurement=$$M" -o $(BIN)/mse ./cmd/mse

examples:
	$(GO) build -trimpath -o examples/go-hello/code/go-hello ./examples/go-hello/src

demo: build
	./scripts/demo.sh

test: examples
	$(GO) test -count=1 -timeout 30m ./...

test-short:
	$(GO) test -short ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Each fuzz target for FUZZTIME (go test -fuzz takes one target at a time).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf $(BIN) examples/go-hello/code/go-hello
