"""The one TensorRT-LLM release this package is written against, and the flags its tools accept.

Pinned: TensorRT-LLM 1.0.0 inside NVIDIA's Triton container 25.10 (the Triton compatibility matrix
lists TensorRT-LLM 1.0.0 for both 25.09 and 25.10). 1.0.0 still builds Qwen v1 (`QWenLMHeadModel`,
`qwen_type == "qwen"`) through the TensorRT engine path: `examples/quantization/quantize.py`
(ModelOpt) or `examples/models/core/qwen/convert_checkpoint.py`, then `trtllm-build`. Its PyTorch
backend has no Qwen v1, so the engine path is the only one.

Where the flag lists below come from (public index of NVIDIA/TensorRT-LLM; the index holds file
versions by commit, not the v1.0.0 tag itself, which is commit ae8270b7 per the v1.0.0 submodule
pointer of triton-inference-server/tensorrtllm_backend):
  - examples/quantization/quantize.py            (stored versions 059c97c1 and one without --export_format)
  - tensorrt_llm/commands/build.py                (stored version 008b2b8d: top-level trtllm-build flags)
  - tensorrt_llm/plugin/plugin.py                 (1.x version: `cli_plugin_args`, the plugin flags)
  - examples/models/core/qwen/convert_checkpoint.py (stored version 0df9aaf3)
  - tensorrt_llm/quantization/quantize_by_modelopt.py (042c510d: calibration loader, AWQ calib cap)
  - examples/models/core/qwen/README.md           (000a01de, the 1.0.0rc4 tree: Qwen v1 support matrix)
Every flag we emit is one of these; `verify_in_container.py` re-checks them against `--help` of the
real tools, because the index may hold a neighbouring version rather than the tag.
"""

from __future__ import annotations

TRTLLM_VERSION = "1.0.0"
TRTLLM_TAG_COMMIT = "ae8270b713446948246f16fadf4e2a32e35d0f62"
TRITON_CONTAINER = "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"
# Where the container keeps TensorRT-LLM's examples; override with TRTLLM_EXAMPLES after
# `git clone -b v1.0.0 https://github.com/NVIDIA/TensorRT-LLM` if your image lacks them.
DEFAULT_EXAMPLES_DIR = "/app/tensorrt_llm/examples"
QUANTIZE_SCRIPT = "quantization/quantize.py"
QWEN_CONVERT_SCRIPT = "models/core/qwen/convert_checkpoint.py"

# examples/quantization/quantize.py, argparse flags (TensorRT-LLM 1.0.0).
QUANTIZE_FLAGS = frozenset({
    "--model_dir", "--nemo_ckpt_path", "--decoder_type", "--device", "--device_map", "--calib_dataset",
    "--calib_tp_size", "--calib_pp_size", "--dtype", "--qformat", "--seed", "--tokenizer_max_seq_length",
    "--batch_size", "--calib_size", "--calib_max_seq_length", "--output_dir", "--tp_size", "--pp_size",
    "--cp_size", "--awq_block_size", "--kv_cache_dtype", "--quantize_lm_head", "--num_medusa_heads",
    "--num_medusa_layers", "--max_draft_len", "--medusa_hidden_act", "--medusa_model_dir",
    "--quant_medusa_head", "--autoq_format", "--auto_quantize_bits",
})
QUANTIZE_QFORMATS = frozenset({"nvfp4", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "int8_wo", "int4_wo", "full_prec"})
QUANTIZE_KV_DTYPES = frozenset({"int8", "fp8"})

# examples/models/core/qwen/convert_checkpoint.py (TensorRT-LLM 1.0.0).
CONVERT_FLAGS = frozenset({
    "--model_dir", "--tp_size", "--pp_size", "--cp_size", "--dtype", "--use_weight_only",
    "--disable_weight_only_quant_plugin", "--weight_only_precision", "--calib_dataset", "--smoothquant",
    "--per_channel", "--per_token", "--int8_kv_cache", "--per_group", "--group_size", "--load_model_on_cpu",
    "--use_parallel_embedding", "--embedding_sharding_dim", "--output_dir", "--workers", "--moe_tp_size",
    "--moe_ep_size",
})

# trtllm-build: tensorrt_llm/commands/build.py plus the plugin flags generated from
# tensorrt_llm/plugin/plugin.py `cli_plugin_args` (TensorRT-LLM 1.0.0).
TRTLLM_BUILD_FLAGS = frozenset({
    "--checkpoint_dir", "--model_config", "--build_config", "--model_cls_file", "--model_cls_name",
    "--output_dir", "--max_batch_size", "--max_input_len", "--max_seq_len", "--max_beam_width",
    "--max_num_tokens", "--opt_num_tokens", "--max_encoder_input_len", "--max_prompt_embedding_table_size",
    "--kv_cache_type", "--paged_kv_cache", "--input_timing_cache", "--output_timing_cache",
    "--profiling_verbosity", "--strip_plan", "--weight_sparsity", "--weight_streaming", "--fast_build",
    "--workers", "--log_level", "--enable_debug_output", "--visualize_network", "--dry_run",
    "--monitor_memory", "--logits_dtype", "--gather_context_logits", "--gather_generation_logits",
    "--gather_all_token_logits", "--lora_dir", "--lora_ckpt_source", "--lora_target_modules",
    "--max_lora_rank", "--speculative_decoding_mode", "--max_draft_len",
    # plugin flags
    "--bert_attention_plugin", "--gpt_attention_plugin", "--gemm_plugin", "--gemm_swiglu_plugin",
    "--fp8_rowwise_gemm_plugin", "--lora_plugin", "--dora_plugin", "--moe_plugin", "--mamba_conv1d_plugin",
    "--nccl_plugin", "--low_latency_gemm_plugin", "--low_latency_gemm_swiglu_plugin",
    "--context_fmha", "--bert_context_fmha_fp32_acc", "--remove_input_padding", "--tokens_per_block",
    "--use_paged_context_fmha", "--use_fp8_context_fmha", "--multiple_profiles", "--paged_state",
    "--streamingllm", "--norm_quant_fusion", "--reduce_fusion", "--user_buffer", "--use_fused_mlp",
    "--pp_reduce_scatter",
})

# ModelOpt's AWQ in quantize_by_modelopt.py: "AWQ calibration could take longer with calib_size = N,
# Using calib_size=32 instead" -- only the first 32 calibration samples are used for AWQ.
AWQ_CALIB_SIZE_CAP = 32
# Group sizes the weight-only groupwise GEMM plugin supports.
AWQ_BLOCK_SIZES = (128, 64)

# --- The `tensorrt_llm` Triton backend (C++, `backend: "tensorrtllm"`) of the pinned release ---------
# Read from triton_backend/inflight_batcher_llm/src/{model_instance_state.cc, model_state.cc, utils.h}.
# The public index holds no file at the v1.0.0 commit (ae8270b7) itself, so the lists below were read
# at two points that bracket it and agree on every entry used here:
#   - triton-inference-server/tensorrtllm_backend tag v0.19.0 (commit c1e19638), the last tag that
#     still carried inflight_batcher_llm/ itself (read with git show from a fetched mirror);
#   - NVIDIA/TensorRT-LLM triton_backend/ stored versions 0c8de69a (model_instance_state.cc),
#     5cdd6921 (model_state.cc), 14c3afec (utils.h), 19290813 (utils.cc), all from after 1.0.
# Where the two differ (the seed and minimum-length input names) both names are listed, see below.
# `verify_in_container.py` re-reads the names from the container's libtriton_tensorrtllm.so.

# Parameters ModelState::GetParameter reads outside any try/catch: a config without them fails to load
# with "Cannot find parameter with name: <name>" (getBatchingTypeFromParams, getGuidedDecodingConfigFromParams).
# gpt_model_path is read inside a try, but an absent or non-existent path ends in
# "Both encoder and decoder model paths are empty" / "Decoder (GPT) model path at ... does not exist".
TRTLLM_REQUIRED_PARAMETERS = frozenset({
    "gpt_model_type", "gpt_model_path", "tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend",
})
# Every parameter the backend reads (with a fallback unless listed above), by the type it parses: a
# value that does not parse (a bool other than true/false/1/0, a non-number) silently falls back to the
# default, so the test checks each value against its type. FORCE_CPU_ONLY_INPUT_TENSORS is not read by
# the C++ backend but is in NVIDIA's own all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt.
TRTLLM_PARAMETER_TYPES: dict[str, str] = {
    "gpt_model_type": "str", "gpt_model_path": "str", "encoder_model_path": "str",
    "tokenizer_dir": "str", "xgrammar_tokenizer_info_path": "str", "guided_decoding_backend": "str",
    "max_beam_width": "int", "max_tokens_in_paged_kv_cache": "int", "max_attention_window_size": "int_list",
    "sink_token_length": "int", "batch_scheduler_policy": "str", "kv_cache_free_gpu_mem_fraction": "float",
    "cross_kv_cache_fraction": "float", "kv_cache_host_memory_bytes": "int", "kv_cache_onboard_blocks": "bool",
    "enable_trt_overlap": "bool", "exclude_input_in_output": "bool", "cancellation_check_period_ms": "int",
    "stats_check_period_ms": "int", "iter_stats_max_iterations": "int", "request_stats_max_iterations": "int",
    "enable_kv_cache_reuse": "bool", "normalize_log_probs": "bool", "enable_chunked_context": "bool",
    "gpu_device_ids": "str", "participant_ids": "str", "num_nodes": "int",
    "lora_cache_optimal_adapter_size": "int", "lora_cache_max_adapter_size": "int",
    "lora_cache_gpu_memory_fraction": "float", "lora_cache_host_memory_bytes": "int", "lora_prefetch_dir": "str",
    "decoding_mode": "str", "executor_worker_path": "str", "lookahead_window_size": "int",
    "lookahead_ngram_size": "int", "lookahead_verification_set_size": "int", "medusa_choices": "str",
    "eagle_choices": "str", "gpu_weights_percent": "float", "enable_context_fmha_fp32_acc": "bool",
    "multi_block_mode": "bool", "cuda_graph_mode": "bool", "cuda_graph_cache_size": "int",
    "speculative_decoding_fast_logits": "bool", "recv_poll_period_ms": "int",
    "FORCE_CPU_ONLY_INPUT_TENSORS": "str",
}
# The only strings the backend's GetParameter<bool> accepts.
TRTLLM_BOOL_VALUES = frozenset({"True", "true", "TRUE", "1", "False", "false", "FALSE", "0"})
TRTLLM_SCHEDULER_POLICIES = frozenset({"max_utilization", "guaranteed_no_evict"})
TRTLLM_MODEL_TYPES = frozenset({"v1", "V1", "inflight_batching", "inflight_fused_batching"})

# Input tensors the backend reads (InputFieldsNames, kStopInputTensorName, kStreamingInputTensorName)
# that our tensorrt_llm config declares, with the dtype NVIDIA's config.pbtxt gives them. The backend
# ignores inputs whose names it does not know, so a wrong name is not an error there: it is silently
# unused. The seed input is `random_seed` at v0.19.0 and `seed` after 1.0 (min_length / min_tokens
# likewise); both are declared, and a caller that wants a seed honoured sends both (same value).
# The backend has no request-priority input in either version (utils.h/utils.cc never call
# Request::setPriority): a priority must be applied before the engine (admission/queueing).
TRTLLM_INPUTS: dict[str, str] = {
    "input_ids": "TYPE_INT32", "input_lengths": "TYPE_INT32", "request_output_len": "TYPE_INT32",
    "end_id": "TYPE_INT32", "pad_id": "TYPE_INT32", "stop_words_list": "TYPE_INT32",
    "bad_words_list": "TYPE_INT32", "temperature": "TYPE_FP32", "runtime_top_k": "TYPE_INT32",
    "runtime_top_p": "TYPE_FP32", "repetition_penalty": "TYPE_FP32", "seed": "TYPE_UINT64",
    "random_seed": "TYPE_UINT64", "streaming": "TYPE_BOOL", "stop": "TYPE_BOOL",
}
TRTLLM_SEED_INPUTS = ("seed", "random_seed")  # after 1.0, v0.19.0
TRTLLM_MIN_TOKENS_INPUTS = ("min_tokens", "min_length")  # after 1.0, v0.19.0 (TYPE_INT32; unused by us)
TRTLLM_OUTPUTS: dict[str, str] = {"output_ids": "TYPE_INT32", "sequence_length": "TYPE_INT32"}

# Overload: Executor::Impl::enqueueRequests throws this (executor.cpp) when max_queue_size (taken from
# dynamic_batching.default_queue_policy.max_queue_size) is reached; the backend's enqueue() answers it as
# TRITONSERVER_ERROR_INTERNAL with the exception text. Triton's own scheduler answers a full queue
# UNAVAILABLE "Exceeds maximum queue size".
TRTLLM_QUEUE_FULL_TEXT = "has been reached, please try again later"
