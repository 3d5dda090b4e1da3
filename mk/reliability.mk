# Reliability: a bounded soak (not in CI). SOAK_ARGS e.g. "--duration-s 600 --concurrency 16".
.PHONY: soak
soak: setup
	$(PY) -m serving.soak $(SOAK_ARGS)
