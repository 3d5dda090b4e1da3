# client/: wingpt_client (sync + asyncio gRPC client), the wingpt-chat CLI and its benchmark.
#   make bench-client [BENCH_STREAMS=64] [BENCH_MAX_TOKENS=32] [BENCH_ROUNDS=3] [BENCH_URL=host:port]
# Without BENCH_URL it starts its own server (embedded default, CPU) on ports 8300-8302 for the run and stops it;
# the server's log goes to build/bench-client-server.log. Figures: docs/benchmarks/client.md.
BENCH_STREAMS ?= 64
BENCH_MAX_TOKENS ?= 32
BENCH_ROUNDS ?= 3
BENCH_ARGS = --streams $(BENCH_STREAMS) --max-tokens $(BENCH_MAX_TOKENS) --rounds $(BENCH_ROUNDS)

.PHONY: bench-client

bench-client: setup
	@if [ -n "$(BENCH_URL)" ]; then \
	  $(PY) -m wingpt_client.bench --url $(BENCH_URL) $(BENCH_ARGS); \
	else \
	  mkdir -p build; \
	  TRITON_HTTP_PORT=8300 TRITON_GRPC_PORT=8301 TRITON_METRICS_PORT=8302 WINGPT_OPENAI=0 WINGPT_REPO_DIR=build/bench-client-repo \
	    $(PY) -m serving serve > build/bench-client-server.log 2>&1 & pid=$$!; \
	  trap 'kill $$pid; wait $$pid' EXIT; \
	  for _ in $$(seq 300); do \
	    $(PY) -m wingpt_client.cli --url 127.0.0.1:8301 --retries 0 --info > /dev/null 2>&1 && break; sleep 1; \
	  done; \
	  $(PY) -m wingpt_client.bench --url 127.0.0.1:8301 $(BENCH_ARGS); \
	fi
