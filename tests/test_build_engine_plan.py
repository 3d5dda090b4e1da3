"""The sizing planner, checked against figures worked out by hand for WiNGPT2-7B and -14B (Qwen v1)."""

from __future__ import annotations

import json

import pytest

from build_engine import plan
from build_engine.errors import ConfigError
from build_engine.gpus import gpu_by_name
from build_engine.models import QWEN_7B, QWEN_14B
from build_engine.sizing import (
    awq_block_size,
    capacity,
    check_tp,
    default_max_num_tokens,
    kv_bytes_per_token,
    suggested_max_batch_size,
    weight_bytes,
)

H100 = gpu_by_name("H100-80GB")  # 81559 MiB = 85,520,809,984 bytes


def test_qwen_7b_has_7_72_billion_parameters():
    # per layer: c_attn 4096x12288 + attn.c_proj 4096x4096 + w1, w2 2x4096x11008 + mlp.c_proj 11008x4096
    assert QWEN_7B.linear_params_per_layer == 50_331_648 + 16_777_216 + 90_177_536 + 45_088_768
    # 32 layers of 202,375,168 + embedding and untied LM head 2 x 151936x4096 + biases/norms 32x20480 + 4096
    assert QWEN_7B.total_params == 6_476_005_376 + 1_244_659_712 + 659_456 == 7_721_324_544


def test_qwen_14b_has_14_17_billion_parameters():
    # per layer: 5120x15360 + 5120x5120 + 2x5120x13696 + 13696x5120 = 315,228,160; 40 layers
    assert QWEN_14B.linear_params == 12_609_126_400
    # + 2 x 152064x5120 + 40x(15360 + 10240) + 5120
    assert QWEN_14B.total_params == 12_609_126_400 + 1_557_135_360 + 1_029_120 == 14_167_290_880


def test_7b_weight_bytes_per_quantization():
    # bf16: 2 bytes for every parameter
    assert weight_bytes(QWEN_7B, "bf16").per_gpu(1) == 2 * 7_721_324_544
    # int4 AWQ g128: 4 bits + one fp16 scale per 128 weights = linear/2 + linear/64; the rest stays bf16
    int4 = weight_bytes(QWEN_7B, "int4_awq", 128)
    assert int4.linear == 3_238_002_688 + 101_187_584
    assert int4.per_gpu(1) == 3_339_190_272 + 2 * 1_244_659_712 + 2 * 659_456 == 5_829_828_608
    # fp8: 1 byte per linear weight
    assert weight_bytes(QWEN_7B, "fp8").per_gpu(1) == 6_476_005_376 + 2_489_319_424 + 1_318_912


def test_kv_cache_bytes_per_token():
    # 2 (K, V) x 32 layers x 32 heads x 128 x 2 bytes = 0.5 MiB, as DESIGN.md says for Llama-2-7B's shape
    assert kv_bytes_per_token(QWEN_7B, "auto", 1) == 524_288
    assert kv_bytes_per_token(QWEN_7B, "fp8", 1) == kv_bytes_per_token(QWEN_7B, "int8", 1) == 262_144
    # 14B: 2 x 40 x 40 x 128 x 2 = 819,200, half of it on each GPU at tp=2
    assert kv_bytes_per_token(QWEN_14B, "auto", 1) == 819_200
    assert kv_bytes_per_token(QWEN_14B, "auto", 2) == 409_600


def test_7b_int4_on_h100_holds_32_sequences_of_4096_tokens():
    cap = capacity(QWEN_7B, H100, "int4_awq", "auto", tp=1, context=4096, max_batch_size=64)
    # activations: max_num_tokens 4158 x (3x4096 + 2x11008) x 2 B x 2 buffers + logits 64 x 151936 x 4 B
    assert cap.activations == 570_544_128 + 38_895_616
    # 0.9 x (85,520,809,984 - 5,829,828,608 - 609,439,744 - 2 GiB reserve)
    assert cap.kv_pool == 69_240_652_185
    # one 4096-token sequence = 128 blocks of 32 tokens x 0.5 MiB = 2 GiB; 32 x 2 GiB = 68.7e9 <= pool < 33 x 2 GiB
    assert cap.sequences == 32
    # one stream reads the int4 linear weights and the bf16 LM head per token: 3.35 TB/s / 4,583,849,984 B
    assert cap.decode_tok_s_ceiling == pytest.approx(730.8, abs=0.1)


def test_fp8_kv_cache_doubles_the_sequences():
    assert capacity(QWEN_7B, H100, "int4_awq", "fp8", 1, 4096, 64).sequences == 64


def test_14b_int4_tp2_on_h100():
    assert awq_block_size(QWEN_14B, 2) == 64  # 13696 / 2 = 6848 = 53.5 x 128 = 107 x 64
    cap = capacity(QWEN_14B, H100, "int4_awq", "auto", tp=2, context=2048, max_batch_size=64)
    # linear 12,609,126,400/2 + /32 (g64 scales) = 6,698,598,400; (that + LM head 1,557,135,360) / 2
    # + replicated embedding 1,557,135,360 + norms/biases 2,058,240
    assert cap.weights_per_gpu == 4_127_866_880 + 1_557_135_360 + 2_058_240 == 5_687_060_480
    assert cap.kv_per_token == 409_600
    # pool 0.9 x (85,520,809,984 - 5,687,060,480 - 219,341,824 - 2 GiB) = 69,720,231,628;
    # a 2048-token sequence is 64 blocks x 32 x 409,600 B = 838,860,800 B -> 83 sequences
    assert cap.kv_pool == 69_720_231_628
    assert cap.sequences == 83


def test_awq_block_size_rules():
    assert awq_block_size(QWEN_7B, 1) == 128
    assert awq_block_size(QWEN_7B, 2) == 128  # 5504 = 43 x 128
    assert awq_block_size(QWEN_7B, 4) == 64  # 2752 = 21.5 x 128
    with pytest.raises(ConfigError, match="64"):
        awq_block_size(QWEN_14B, 2, requested=128)
    with pytest.raises(ConfigError, match="does not divide"):
        awq_block_size(QWEN_14B, 4)  # 3424 = 53.5 x 64
    with pytest.raises(ConfigError, match="one of"):
        awq_block_size(QWEN_7B, 1, requested=32)


def test_tp_must_divide_the_heads():
    check_tp(QWEN_14B, 2)
    with pytest.raises(ConfigError, match="does not divide the 40 attention heads"):
        check_tp(QWEN_14B, 3)


def test_suggestions():
    assert default_max_num_tokens(4096, 64) == 4095 + 63
    assert suggested_max_batch_size(83) == 80
    assert suggested_max_batch_size(1000) == 256
    assert suggested_max_batch_size(5) == 5
    assert suggested_max_batch_size(0) == 0


def run_plan(capsys, *argv: str) -> dict:
    assert plan.main(list(argv)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_one_patient_at_a_time_gets_int4_awq(capsys):
    report = run_plan(capsys, "--gpu", "H100-80GB", "--model", "7b", "--concurrency", "1")
    assert report["recommended"] == "int4_awq"
    assert report["options"]["int4_awq"]["sequences"] == 32
    assert report["suggested"] == {"max_batch_size": 32, "max_seq_len": 4096, "max_num_tokens": 4126}


def test_many_patients_on_hopper_get_fp8(capsys):
    report = run_plan(capsys, "--gpu", "H100-80GB", "--model", "7b", "--context", "2048", "--concurrency", "16")
    assert report["recommended"] == "fp8" and report["recommendation_fits"]
    assert report["options"]["fp8"]["speedup_vs_bf16"] == "1.3-1.4x"


def test_ampere_has_no_fp8_and_prefers_bf16_under_load(capsys):
    report = run_plan(capsys, "--gpu", "A100-80GB", "--context", "2048", "--concurrency", "16")
    assert set(report["options"]) == {"int4_awq", "bf16"}
    assert report["recommended"] == "bf16"
    assert plan.main(["--gpu", "A100-80GB", "--quant", "fp8"]) == 2
    assert "needs FP8 tensor cores" in capsys.readouterr().err


def test_report_says_when_nothing_fits(capsys):
    report = run_plan(capsys, "--gpu", "A10-24GB", "--model", "14b", "--concurrency", "64")
    assert not report["recommendation_fits"]
    assert "no quantization holds 64 sequences" in report["reason"]


def test_human_table_comes_first(capsys):
    assert plan.main(["--gpu", "H100-80GB", "--model", "14b"]) == 0
    out = capsys.readouterr().out
    assert out.index("seqs@ctx") < out.index('{"gpu"')
    assert "2 x H100-80GB" in out and "make engine MODEL_DIR=... QUANT=" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--gpu", "T4"], "unknown GPU"),
    (["--gpu", "H100-80GB", "--model", "72b"], "unknown model"),
    (["--gpu", "H100-80GB", "--context", "9000"], "over the 8192-token limit"),
    (["--gpu", "H100-80GB", "--tp", "3"], "does not divide"),
    (["--gpu", "H100-80GB", "--concurrency", "0"], "--concurrency"),
    (["--gpu", "A10-24GB", "--kv-cache", "fp8"], "FP8 KV cache needs"),
])
def test_bad_plans_are_rejected_clearly(capsys, argv, message):
    assert plan.main(argv) == 2
    assert message in capsys.readouterr().err


def test_context_past_training_length_warns(capsys):
    report = run_plan(capsys, "--gpu", "H100-80GB", "--context", "6000")
    assert "past the 4096 tokens" in report["warning"]


def test_the_plan_says_what_a_kv_cache_dtype_loses(capsys):
    assert plan.main(["--gpu", "L40S-48GB", "--quant", "int4_awq", "--kv-cache", "fp8"]) == 0
    out = capsys.readouterr().out
    assert "LOST: an FP8 KV cache with int4_awq weights turns off paged context FMHA" in out
    assert "KV-cache reuse of the shared preamble and chunked prefill are lost" in out
    assert "ENGINE_ACCEPT_NO_KV_REUSE=1" in out
    assert json.loads(out.strip().splitlines()[-1])["kv_reuse_lost"]
    assert plan.main(["--gpu", "L40S-48GB", "--quant", "fp8", "--kv-cache", "fp8"]) == 0
    assert "LOST" not in capsys.readouterr().out
