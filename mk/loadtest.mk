# loadtest/: Locust capacity planning and side-by-side comparison with baselines (docs/loadtest.md).
#   make loadtest [LOADTEST_URL=host:port] [LOADTEST_ARGS="--steps 1,2,4,8 --step-s 15 ..."]  (default: the knee search)
#   make compare  [COMPARE_URL=host:port] [COMPARE_ARGS="--baseline kimi=https://...,model=...,key_env=VAR ..."]
# Without a URL each starts its own Triton (embedded default, loopback, free ports) and stops it after.
# Reports: build/loadtest/report.html, build/compare/compare.html. SLOs: LOADTEST_SLO_TTFT_MS, LOADTEST_SLO_TPOT_MS.
LOADTEST_URL ?=
COMPARE_URL ?=
LOADTEST_ARGS ?= --find-capacity --max-concurrency 32
COMPARE_ARGS ?=

.PHONY: loadtest compare

loadtest: setup
	$(PY) -m loadtest.run $(if $(LOADTEST_URL),--url $(LOADTEST_URL)) --out build/loadtest $(LOADTEST_ARGS)

compare: setup
	$(PY) -m loadtest.compare $(if $(COMPARE_URL),--url $(COMPARE_URL)) --out build/compare $(COMPARE_ARGS)
