# provisiond build, test and tooling. Tools are installed from the Go module proxy at pinned
# versions into ./bin so a bare machine with only Go can run every target.
SHELL       := /bin/bash
GO          ?= go
BIN         := $(CURDIR)/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
# nethttpomithttp2 leaves net/http's bundled HTTP/2 out (0.5 MB): provisiond speaks HTTP/1.1
# only (the device's protocol; the control socket and the dashboard are plain HTTP/1.1).
TAGS        := nethttpomithttp2
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck
FUZZTIME    ?= 30s
PKGS        := ./...

.PHONY: all build test vet fmt-check staticcheck unit fuzz fuzz-smoke demo demo-station clean tools bench scale soak test-arch sizes bench-floor bench-station

all: build

build:
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

tools: $(STATICCHECK)

$(STATICCHECK):
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) $(PKGS)

# Every test under the race detector, with coverage; scripts/coverage-gate.sh then holds the
# per-package coverage floors.
unit:
	@mkdir -p $(BIN)
	set -o pipefail; $(GO) test -race -count=1 -cover $(PKGS) 2>&1 | tee $(BIN)/unit.out
	@./scripts/coverage-gate.sh $(BIN)/unit.out

# The README's test command: static checks, then every test under the race detector.
test: fmt-check vet staticcheck unit fuzz-smoke

# Every fuzz target for FUZZTIME each (default 30s); `make fuzz FUZZTIME=10m` for a long run.
fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

# A fixed number of executions per target (not a duration, which can flake on a loaded
# machine): proves the targets still build and run (CI).
fuzz-smoke:
	@./scripts/fuzz.sh smoke

# The README's first command: the real daemon provisions the simulated nRF91 (on a pty) from
# the simulated Provisioning Service (on loopback). `make demo TRANSPORT=coap` uses CoAP/DTLS.
TRANSPORT ?= http
demo: build
	$(BIN)/provisiond-demo --transport $(TRANSPORT) --provisiond $(BIN)/provisiond

# A provisioning station: N simulated nRF91s and N provisiond instances; tokens, one bulk
# claim with the auto-onboarding tag, every board provisioned, `provisiond list` at the end
# and the dashboard's address while it runs. HOLD=1 keeps the boards, instances and
# dashboard running after the summary until Ctrl-C, to look at the page.
N ?= 8
demo-station: build
	$(BIN)/provisiond-demo --station $(N) --provisiond $(BIN)/provisiond $(if $(filter 1,$(HOLD)),--hold)

# The figures of BENCHMARKS.md §4 (cost per attempt, idle, memory, scale, soak); they take
# minutes and are not part of `make test`.
SOAK_N ?= 1000
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 100x -count 3 ./bench/attempt
	$(GO) run ./bench/cost -bin $(BIN)/provisiond -n 30 -idle 20s,150s -transport http
	$(GO) run ./bench/cost -bin $(BIN)/provisiond -n 30 -idle 20s -transport coap
scale: build
	$(GO) run ./bench/scale -bin $(BIN)/provisiond -n 64 -transport mixed
soak: build
	$(GO) run ./bench/soak -bin $(BIN)/provisiond -n $(SOAK_N)

# A station of N boards with the dashboard's page open in headless Chromium: the dashboard's
# CPU and memory and the delay from a modem's DONE to its tile (BENCHMARKS.md §11).
bench-station: build
	$(GO) run ./bench/station -bin $(BIN)/provisiond -n $(N)

# The unit tests of every package and e2e (-short) for arm64 and armhf under qemu-user (no
# binfmt needed; internal/testexec starts the binaries the tests build through the same qemu).
# About 14 CPU-minutes per architecture, tens of minutes of wall time on 2 cores and sensitive
# to load, so it is not part of `make test` or .ci/run (BENCHMARKS.md section 9).
test-arch:
	./scripts/test-arch.sh arm64 armhf

# Where the bytes of the stripped provisiond binary go, per module (BENCHMARKS.md §4.8).
sizes:
	$(GO) run ./bench/sizes

# Wall time of an attempt against the least it could cost: typical modem timing, 115200 baud,
# a network round trip of 50 and 300 ms, both transports (BENCHMARKS.md §4.9).
bench-floor: build
	$(GO) run ./bench/floor -bin $(BIN)/provisiond -n 3 -trace

clean:
	rm -rf $(BIN) dist

# Debian package and deployment checks: make deb, make deploy-check.
include deploy/Makefile.inc
