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
