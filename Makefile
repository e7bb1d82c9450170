# The two commands a newcomer needs: `make run` and `make test`.
GO       ?= go
BIN      := bin
BINARIES := $(notdir $(wildcard cmd/*))
TESTFLAGS ?=
FUZZTIME  ?= 10s
# package:FuzzTarget pairs; go test -fuzz takes one package and one target per run.
FUZZ_TARGETS := \
	./domain:FuzzApplyMapping \
	./domain:FuzzDecodeMessage \
	./domain:FuzzSignatureVerify \
	./domain:FuzzEventTypeFilters \
	./messaging:FuzzDecode \
	./messaging:FuzzHeaderMarshaler \
	./connector:FuzzDecodePageToken \
	./connector:FuzzNextLink \
	./store/embedded:FuzzDecodeToken \
	./store/embedded:FuzzValidJSON \
	./store/embedded:FuzzValidObject \
	./store/embedded:FuzzPrepareCommonBodyAgreesWithTheGeneralPath \
	./store/cosmos:FuzzDecodeToken

.PHONY: build run test lint bench fuzz chaos clean

## build: every binary of cmd/ into ./bin
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

## run: the whole product in one process on embedded defaults (in-process broker, embedded store)
run:
	$(GO) run ./cmd/standalone $(ARGS)

## test: every test, race detector on (CI=true turns a missing RabbitMQ or emulator into a failure); then the benchmark harness's short mode, writing its figures to a temporary file
test:
	$(GO) test -race -count=1 -timeout 14m $(TESTFLAGS) ./...
	BENCH_RESULTS=$$(mktemp) $(GO) test -tags bench -short -count=1 -run 'TestBench_' -timeout 5m ./app

## lint: gofmt check and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags bench ./app

## bench: one table (bench/results.json) of API events/s, end-to-end webhook deliveries (standalone and fleet) with latency and slow-endpoint isolation, 100k-record sync pull/push, conflicts resolved/s, start-up time and memory of every binary, each beside its raw baseline measured in the same run; then store point reads/writes and dispatcher throughput at 1, 2, 4, 8 replicas. SHORT=1: a quick pass (what make test runs)
ifdef SHORT
BENCH_SHORT := -short
BENCH_N     := 200x
BENCH_API   := 1s
else
BENCH_SHORT :=
BENCH_N     := 2000x
BENCH_API   := 5s
endif
bench:
	rm -f bench/results.json
	$(GO) test -run '^$$' -bench BenchmarkAPIEvents -benchtime $(BENCH_API) ./app
	$(GO) test -run '^$$' -bench . -benchtime 1x $(BENCH_SHORT) ./connector ./handlers/syncrun
	$(GO) test -run '^$$' -bench BenchmarkResolver -benchtime $(BENCH_N) ./handlers/conflicts
	$(GO) test -tags bench -count=1 -run 'TestBench_(Dispatcher|Binaries)' -timeout 20m $(BENCH_SHORT) ./app
	@$(GO) test -tags bench -count=1 -run TestBench_Table -v ./app | grep -E '^(\||[0-9]{4}-)'
	$(GO) test -run '^$$' -bench . -benchtime $(BENCH_N) ./store/embedded ./store/cosmos
	@out=$$(IM_SCALING_REPLICAS=1,2,4,8 $(GO) test -count=1 -run '^TestScaling_' -v ./app 2>&1) || { echo "$$out"; exit 1; }; \
		echo "$$out" | sed -n -E 's/^ +((\||webhook-dispatcher replicas).*)$$/\1/p'

## fuzz: every fuzz test for FUZZTIME each (default 10s), one after another; seeds live in each package's testdata/fuzz
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg; \
	done

## chaos: the fault-injection suite at full length (SIGKILLed dispatchers, RabbitMQ restart, 30 s Cosmos outage, failing receivers), CHAOS_COUNT times in a row (default 3); make test runs a short version
CHAOS_COUNT ?= 3
chaos:
	CHAOS_MODE=full $(GO) test -race -count=$(CHAOS_COUNT) -failfast -run '^TestChaos_' -v -timeout 60m ./app

clean:
	rm -rf $(BIN)
