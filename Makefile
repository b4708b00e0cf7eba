# allot's one entry point for checks. `make test` is the whole suite, the
# same command CI runs (.ci/run); `make bench` runs the benchmarks.
#
# What it needs: Go 1.26 (go.mod's go line) and, on the first run, the Go
# module proxy (GOPROXY, proxy.golang.org by default) to download the
# modules in go.sum, staticcheck included: it is a tool dependency of the
# module (go.mod's tool directive), run with `go tool staticcheck`.
GO ?= go
STATICCHECK ?= $(GO) tool staticcheck
PKGS := ./...

.PHONY: test lint unit bench bench-python fuzz build

test: lint unit

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)
	@$(GO) mod tidy -diff || (echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1)

unit:
	$(GO) test -race -timeout 20m $(PKGS)

build:
	$(GO) build -o allot ./cmd/allot
	$(GO) build -o allot-bench ./cmd/allot-bench

# The server benchmark: starts a durable server in a temporary directory,
# runs the baseline, throughput and handoff workloads against it over
# loopback HTTP, then compares it (allot-bench -compare) with three replicas
# over PostgreSQL, PostgreSQL's conditional UPDATE and a Redis Lua semaphore,
# skipping what does not answer; stops it all. The client and its workloads
# are a tool apart from the server: cmd/allot-bench (workloads in its
# internal/bench).
bench: build
	./scripts/bench.sh

# The Python client's benchmark: starts a durable server on a free port,
# runs clients/python/bench.py (32 threads over 64 limits) and allot-bench's
# throughput workload (the Go figure) against it, prints both.
PYTHON ?= python3
bench-python: build
	$(PYTHON) clients/python/bench.py --server ./allot --go-bench ./allot-bench

# Short fuzzing of the request decoders and of the JSON scanner they read
# bodies with; each package's corpus lives in its testdata/fuzz.
fuzz:
	$(GO) test ./internal/jsonbody -run '^$$' -fuzz FuzzScanObject -fuzztime 30s
	$(GO) test ./internal/jsonbody -run '^$$' -fuzz FuzzDecodeString -fuzztime 30s
	$(GO) test ./internal/httpapi -run '^$$' -fuzz FuzzCreateLimit -fuzztime 30s
	$(GO) test ./internal/httpapi -run '^$$' -fuzz FuzzIncrementWithLease -fuzztime 30s
	$(GO) test ./internal/httpapi -run '^$$' -fuzz FuzzPatch -fuzztime 30s
	$(GO) test ./internal/httpapi -run '^$$' -fuzz FuzzCreateRun -fuzztime 30s
	$(GO) test ./internal/auth -run '^$$' -fuzz FuzzParseAuthorization -fuzztime 30s
