# build_engine: compile WiNGPT2 into a TensorRT-LLM engine (run inside the pinned Triton TRT-LLM container).
#   make engine MODEL_DIR=/models/WiNGPT2-7B-Chat [QUANT=int4_awq|fp8|w4a8_awq|bf16] [KV_CACHE=auto|fp8|int8]
#               [TP=2] [MAX_BATCH_SIZE=64] [MAX_SEQ_LEN=4096] [CALIB_JSONL=my.jsonl] [DRY_RUN=1]
#   make engine-plan GPU=H100-80GB [MODEL=7b] [CONTEXT=4096] [CONCURRENCY=32] [QUANT=...] [TP=...]
#   make engine-verify [MODEL_DIR=...]      flag check (+ short build and generation) in the container
# MODEL_DIR and DRY_RUN reach the program through the environment; every ENGINE_* variable does too.
# The container has no .venv: fall back to its python3.
ENGINE_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
_opt = $(if $(2),$(1) $(2))

.PHONY: engine engine-plan engine-verify

engine:
	$(ENGINE_PY) -m build_engine $(call _opt,--quant,$(QUANT)) $(call _opt,--kv-cache,$(KV_CACHE)) \
		$(call _opt,--tp,$(TP)) $(call _opt,--max-batch-size,$(MAX_BATCH_SIZE)) \
		$(call _opt,--max-seq-len,$(MAX_SEQ_LEN)) $(call _opt,--calib-jsonl,$(CALIB_JSONL))

engine-plan:
	$(ENGINE_PY) -m build_engine.plan --gpu $(or $(GPU),H100-80GB) $(call _opt,--model,$(MODEL)) \
		$(call _opt,--context,$(CONTEXT)) $(call _opt,--concurrency,$(CONCURRENCY)) \
		$(call _opt,--quant,$(QUANT)) $(call _opt,--tp,$(TP)) $(call _opt,--kv-cache,$(KV_CACHE))

engine-verify:
	$(ENGINE_PY) build_engine/verify_in_container.py $(call _opt,--model-dir,$(MODEL_DIR))
