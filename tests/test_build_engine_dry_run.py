"""`python -m build_engine` in dry-run mode: the commands, flags, names and errors of a build, without a GPU."""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from build_engine import cli, pins
from build_engine.commands import steps
from build_engine.settings import BuildSettings, resolve

REPO = Path(__file__).resolve().parent.parent
QWEN_7B_CONFIG = {"architectures": ["QWenLMHeadModel"], "model_type": "qwen", "hidden_size": 4096,
                  "num_attention_heads": 32, "num_hidden_layers": 32, "intermediate_size": 22016,
                  "kv_channels": 128, "vocab_size": 151936, "seq_length": 8192, "max_position_embeddings": 8192}
QWEN_14B_CONFIG = {**QWEN_7B_CONFIG, "hidden_size": 5120, "num_attention_heads": 40, "num_hidden_layers": 40,
                   "intermediate_size": 27392, "vocab_size": 152064, "seq_length": 2048}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The build reads MODEL_DIR, DRY_RUN and ENGINE_*: start every test from none of them."""
    for f in fields(BuildSettings):
        monkeypatch.delenv(f.metadata["env"], raising=False)


def checkpoint(tmp_path: Path, name: str, config: dict) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture
def ckpt_7b(tmp_path):
    return checkpoint(tmp_path, "WiNGPT2-7B-Chat", QWEN_7B_CONFIG)


@pytest.fixture
def ckpt_14b(tmp_path):
    return checkpoint(tmp_path, "WiNGPT2-14B-Chat", QWEN_14B_CONFIG)


def dry(tmp_path: Path, *argv: str) -> str:
    out = io.StringIO()
    assert cli.main(["--dry-run", "--output-root", str(tmp_path / "engines"), *argv], out=out) == 0
    return out.getvalue()


def fail(capsys, *argv: str) -> str:
    assert cli.main(["--dry-run", *argv], out=io.StringIO()) == 2
    return capsys.readouterr().err


def build_of(*argv: str):
    return resolve(BuildSettings.from_sources(cli.parse_args(list(argv))))


def test_7b_dry_run_prints_quantize_build_and_render(tmp_path, ckpt_7b):
    out = dry(tmp_path, "--model-dir", str(ckpt_7b))
    assert "DRY RUN" in out and pins.TRITON_CONTAINER in out
    assert "quantization/quantize.py" in out
    for flag in ("--qformat int4_awq", "--awq_block_size 128", "--dtype bfloat16", "--calib_size 32",
                 f"--calib_dataset {tmp_path}/engines/wingpt2-7b-chat_int4awq-g128_kv-bf16_tp1_bs64_seq4096/calib"):
        assert flag in out
    for flag in ("trtllm-build", "--gpt_attention_plugin auto", "--kv_cache_type paged",
                 "--remove_input_padding enable", "--use_paged_context_fmha enable", "--context_fmha enable",
                 "--max_batch_size 64",
                 "--max_seq_len 4096", "--max_input_len 4095", "--max_num_tokens 4158", "--tokens_per_block 32",
                 "--gemm_plugin auto", "--workers 1"):
        assert flag in out
    for fragment in ("-m serving render", "--target gpu-trtllm", "--set engine_dir=", "--set tokenizer_dir=",
                     "--set max_batch_size=64", "--set context_window=4096", "--set enable_kv_cache_reuse=true"):
        assert fragment in out
    assert f"--set tokenizer_dir={ckpt_7b}" in out and f"--model-dir {ckpt_7b}" in out


def test_dry_run_writes_nothing(tmp_path, ckpt_7b):
    dry(tmp_path, "--model-dir", str(ckpt_7b))
    assert not (tmp_path / "engines").exists()


def test_dry_run_prints_the_files_it_would_write(tmp_path, ckpt_7b):
    out = dry(tmp_path, "--model-dir", str(ckpt_7b))
    assert "calib/train.jsonl: 32 samples packed from 302 prompts" in out
    manifest = out[out.index("build.json\n") + len("build.json\n"):out.index("\n## step 1")]
    data = json.loads(manifest)
    assert data["tensorrt_llm"] == "1.0.0" and data["quant"] == "int4_awq" and data["max_seq_len"] == 4096
    assert data["calibration"]["samples"] == 32


def test_14b_builds_on_two_gpus_with_awq_group_64(tmp_path, ckpt_14b):
    out = dry(tmp_path, "--model-dir", str(ckpt_14b), "--max-batch-size", "32")
    assert "wingpt2-14b-chat_int4awq-g64_kv-bf16_tp2_bs32_seq2048" in out
    for flag in ("--tp_size 2", "--awq_block_size 64", "--workers 2", "--max_seq_len 2048",
                 "--max_num_tokens 2078", "--set context_window=2048", "--set max_tokens_limit=1024"):
        assert flag in out


def test_engine_directory_name_states_the_settings(ckpt_7b):
    b = build_of("--model-dir", str(ckpt_7b), "--quant", "fp8", "--kv-cache", "fp8", "--max-batch-size", "128",
                 "--max-seq-len", "2048", "--model-name", "WiNGPT2 7B Chat")
    assert b.name == "wingpt2-7b-chat_fp8_kv-fp8_tp1_bs128_seq2048"
    assert b.engine_dir == Path("build/engines") / b.name / "engine"


@pytest.mark.parametrize("quant", ["int4_awq", "fp8", "w4a8_awq", "bf16"])
@pytest.mark.parametrize("kv", ["auto", "fp8", "int8"])
def test_every_emitted_flag_is_accepted_by_the_pinned_release(ckpt_7b, quant, kv):
    b = build_of("--model-dir", str(ckpt_7b), "--quant", quant, "--kv-cache", kv, "--accept-no-kv-reuse")
    checkpoint_step, build_step, _render = steps(b, 32)
    accepted = pins.QUANTIZE_FLAGS if checkpoint_step.argv[1].endswith(pins.QUANTIZE_SCRIPT) else pins.CONVERT_FLAGS
    assert {t for t in checkpoint_step.argv if t.startswith("--")} <= accepted
    assert {t for t in build_step.argv if t.startswith("--")} <= pins.TRTLLM_BUILD_FLAGS
    if "--qformat" in checkpoint_step.argv:
        assert checkpoint_step.argv[checkpoint_step.argv.index("--qformat") + 1] in pins.QUANTIZE_QFORMATS
    if "--kv_cache_dtype" in checkpoint_step.argv:
        assert checkpoint_step.argv[checkpoint_step.argv.index("--kv_cache_dtype") + 1] in pins.QUANTIZE_KV_DTYPES


def test_awq_never_gets_more_samples_than_it_uses(tmp_path, ckpt_7b):
    # quantize.py keeps only the first 32 samples for AWQ, so more would silently drop prompts
    assert "--calib_size 32" in dry(tmp_path, "--model-dir", str(ckpt_7b), "--calib-samples", "64")
    fp8 = dry(tmp_path, "--model-dir", str(ckpt_7b), "--calib-samples", "64", "--quant", "fp8")
    assert "--calib_size 64" in fp8 and "64 samples packed from 302 prompts" in fp8


def test_bf16_without_kv_quantization_is_converted_not_calibrated(tmp_path, ckpt_7b):
    out = dry(tmp_path, "--model-dir", str(ckpt_7b), "--quant", "bf16")
    assert "models/core/qwen/convert_checkpoint.py" in out and "quantize.py" not in out
    assert "train.jsonl" not in out


def test_bf16_with_int8_kv_cache_is_calibrated(tmp_path, ckpt_7b):
    out = dry(tmp_path, "--model-dir", str(ckpt_7b), "--quant", "bf16", "--kv-cache", "int8", "--accept-no-kv-reuse")
    assert "--qformat full_prec" in out and "--kv_cache_dtype int8" in out


@pytest.mark.parametrize(("quant", "kv"), [("int4_awq", "fp8"), ("bf16", "fp8"), ("int4_awq", "int8"),
                                           ("fp8", "int8"), ("w4a8_awq", "int8"), ("bf16", "int8")])
def test_a_kv_cache_that_loses_kv_reuse_is_refused_with_the_reason(capsys, ckpt_7b, quant, kv):
    """TensorRT-LLM 1.0's builder drops paged context FMHA for these with only a warning (sizing.kv_reuse_loss)."""
    err = fail(capsys, "--model-dir", str(ckpt_7b), "--quant", quant, "--kv-cache", kv)
    assert "paged context FMHA" in err and "KV-cache reuse" in err and "chunked prefill" in err
    assert "--accept-no-kv-reuse" in err and "ENGINE_ACCEPT_NO_KV_REUSE=1" in err


@pytest.mark.parametrize(("quant", "kv"), [("int4_awq", "auto"), ("bf16", "auto"), ("fp8", "fp8"),
                                           ("w4a8_awq", "fp8"), ("fp8", "auto")])
def test_combinations_that_keep_kv_reuse_build_and_serve_with_it(ckpt_7b, quant, kv):
    b = build_of("--model-dir", str(ckpt_7b), "--quant", quant, "--kv-cache", kv)
    _checkpoint, build_step, render_step = steps(b, 32)
    assert build_step.argv[build_step.argv.index("--use_paged_context_fmha") + 1] == "enable"
    assert "enable_kv_cache_reuse=true" in render_step.argv and "enable_chunked_context=true" in render_step.argv


def test_an_accepted_loss_is_built_and_rendered_as_what_it_is(tmp_path, monkeypatch, ckpt_7b):
    monkeypatch.setenv("ENGINE_ACCEPT_NO_KV_REUSE", "1")
    out = dry(tmp_path, "--model-dir", str(ckpt_7b), "--quant", "int4_awq", "--kv-cache", "fp8")
    assert "# accepted: an FP8 KV cache with int4_awq weights turns off paged context FMHA" in out
    assert "--use_paged_context_fmha disable" in out
    assert "--set enable_kv_cache_reuse=false" in out and "--set enable_chunked_context=false" in out


def test_fp8_uses_fp8_context_attention_only_with_an_fp8_kv_cache(ckpt_7b):
    with_fp8_kv = steps(build_of("--model-dir", str(ckpt_7b), "--quant", "fp8", "--kv-cache", "fp8"), 32)[1].argv
    assert with_fp8_kv[with_fp8_kv.index("--use_fp8_context_fmha") + 1] == "enable"
    with_bf16_kv = steps(build_of("--model-dir", str(ckpt_7b), "--quant", "fp8"), 32)[1].argv
    assert with_bf16_kv[with_bf16_kv.index("--use_fp8_context_fmha") + 1] == "disable"
    assert "--gemm_plugin" not in with_bf16_kv


def test_autoawq_checkpoint_is_converted_as_is(tmp_path):
    awq = checkpoint(tmp_path, "WiNGPT2-7B-Chat-AWQ",
                     {**QWEN_7B_CONFIG, "quantization_config": {"quant_method": "awq", "group_size": 128}})
    out = dry(tmp_path, "--model-dir", str(awq))
    assert "convert_checkpoint.py" in out and "--dtype float16" in out and "train.jsonl" not in out
    assert "wingpt2-7b-chat-awq_autoawq-g128_kv-fp16_tp1" in out


def test_cli_flags_win_over_the_environment(monkeypatch, ckpt_7b):
    monkeypatch.setenv("MODEL_DIR", str(ckpt_7b))
    monkeypatch.setenv("ENGINE_QUANT", "fp8")
    monkeypatch.setenv("ENGINE_MAX_BATCH_SIZE", "16")
    b = build_of("--quant", "bf16")
    assert (b.quant, b.settings.max_batch_size) == ("bf16", 16)


def test_user_calibration_jsonl_in_chat_form(tmp_path, ckpt_7b):
    mine = tmp_path / "mine.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "我发烧了"}]}, ensure_ascii=False)
    mine.write_text("\n".join([line] * 40) + "\n", encoding="utf-8")
    out = dry(tmp_path, "--model-dir", str(ckpt_7b), "--calib-jsonl", str(mine))
    assert "32 samples packed from 40 prompts" in out
    assert "User: 我发烧了<|endoftext|>\\n Assistant:" in out


def test_make_engine_dry_run(ckpt_7b, tmp_path):
    done = subprocess.run(["make", "-s", "engine", f"MODEL_DIR={ckpt_7b}", "DRY_RUN=1", "TP=1", "QUANT=fp8",
                           f"ENGINE_OUTPUT_ROOT={tmp_path}"], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "--qformat fp8" in done.stdout and "trtllm-build" in done.stdout


def test_a_real_run_stops_before_gpu_work_without_the_pinned_tools(tmp_path, ckpt_7b, capsys):
    code = cli.main(["--model-dir", str(ckpt_7b), "--output-root", str(tmp_path / "engines"),
                     "--trtllm-examples", str(tmp_path / "nowhere")], out=io.StringIO())
    assert code == 2
    assert "quantize.py not found" in capsys.readouterr().err
    assert not (tmp_path / "engines").exists()


def test_missing_checkpoint_directory(capsys, tmp_path):
    assert "does not exist" in fail(capsys, "--model-dir", str(tmp_path / "absent"))


def test_no_checkpoint_at_all(capsys):
    assert "set MODEL_DIR" in fail(capsys)


def test_checkpoint_of_another_architecture(capsys, tmp_path):
    qwen2 = checkpoint(tmp_path, "Qwen2-7B", {**QWEN_7B_CONFIG, "architectures": ["Qwen2ForCausalLM"],
                                              "model_type": "qwen2"})
    err = fail(capsys, "--model-dir", str(qwen2))
    assert "Qwen2ForCausalLM" in err and "QWenLMHeadModel" in err


def test_checkpoint_without_config(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no config.json" in fail(capsys, "--model-dir", str(tmp_path / "empty"))


def test_tp_that_does_not_divide_the_heads(capsys, ckpt_14b):
    assert "does not divide the 40 attention heads" in fail(capsys, "--model-dir", str(ckpt_14b), "--tp", "3")


def test_sequence_length_over_the_model_limit(capsys, ckpt_7b):
    assert "over the 8192-token limit" in fail(capsys, "--model-dir", str(ckpt_7b), "--max-seq-len", "16384")


def test_sequence_length_past_training_is_a_warning(tmp_path, ckpt_7b):
    assert "past the 4096 tokens" in dry(tmp_path, "--model-dir", str(ckpt_7b), "--max-seq-len", "8192")


@pytest.mark.parametrize(("argv", "message"), [
    (["--quant", "int8_sq"], "quantization must be one of"),
    (["--kv-cache", "fp16"], "KV cache must be one of"),
    (["--batch-scheduler-policy", "fifo"], "batch scheduler policy"),
    (["--max-batch-size", "0"], "max_batch_size"),
    (["--max-num-tokens", "8", "--max-batch-size", "64"], "at least max_batch_size"),
    (["--quant", "fp8", "--awq-block-size", "64"], "applies to int4_awq"),
    (["--kv-cache-free-gpu-mem-fraction", "1.5"], "between 0 and 1"),
])
def test_bad_values_are_rejected(capsys, ckpt_7b, argv, message):
    assert message in fail(capsys, "--model-dir", str(ckpt_7b), *argv)


def test_awq_group_128_cannot_split_14b_across_two_gpus(capsys, ckpt_14b):
    assert "use --awq-block-size 64" in fail(capsys, "--model-dir", str(ckpt_14b), "--awq-block-size", "128")


def test_autoawq_checkpoint_refuses_other_quantizations(capsys, tmp_path):
    awq = checkpoint(tmp_path, "awq", {**QWEN_7B_CONFIG, "quantization_config": {"quant_method": "awq"}})
    assert "already AWQ-quantized" in fail(capsys, "--model-dir", str(awq), "--quant", "fp8")
    assert "tp=1" in fail(capsys, "--model-dir", str(awq), "--tp", "2")


def test_bad_environment_value(capsys, monkeypatch, ckpt_7b):
    monkeypatch.setenv("ENGINE_TP", "two")
    assert "tp must be a number" in fail(capsys, "--model-dir", str(ckpt_7b))


def test_calibration_file_errors(capsys, tmp_path, ckpt_7b):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "User: 你好<|endoftext|>\\n Assistant:"}\nnot json\n', encoding="utf-8")
    assert "bad.jsonl:2: not valid JSON" in fail(capsys, "--model-dir", str(ckpt_7b), "--calib-jsonl", str(bad))
    few = tmp_path / "few.jsonl"
    few.write_text('{"text": "User: 你好<|endoftext|>\\n Assistant:"}\n', encoding="utf-8")
    assert "needs at least 32" in fail(capsys, "--model-dir", str(ckpt_7b), "--calib-jsonl", str(few))
    turns = tmp_path / "turns.jsonl"
    turns.write_text('{"messages": [{"role": "assistant", "content": "hi"}]}\n', encoding="utf-8")
    assert "turns.jsonl:1: messages" in fail(capsys, "--model-dir", str(ckpt_7b), "--calib-jsonl", str(turns))


def test_render_step_produces_configs_triton_parses(tmp_path, ckpt_14b):
    """Run the render command of a 14B dry run for real and parse every config as a Triton ModelConfig."""
    pytest.importorskip("serving.render")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    b = build_of("--model-dir", str(ckpt_14b), "--output-root", str(tmp_path / "engines"), "--max-batch-size", "32")
    render = steps(b, 32)[2]
    done = subprocess.run(render.argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    configs = {p.parent.name: text_format.Parse(p.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
               for p in b.repo_dir.glob("*/config.pbtxt")}
    assert set(configs) == {"ensemble", "tensorrt_llm"}
    engine = configs["tensorrt_llm"]
    assert engine.backend == "tensorrtllm" and engine.max_batch_size == 32
    assert engine.model_transaction_policy.decoupled
    params = {k: v.string_value for k, v in engine.parameters.items()}
    assert params["gpt_model_path"] == str(b.engine_dir.resolve())
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["enable_kv_cache_reuse"] == "true" and params["batch_scheduler_policy"] == "guaranteed_no_evict"
    orchestrator = {k: v.string_value for k, v in configs["ensemble"].parameters.items()}
    assert orchestrator["engine_model"] == "tensorrt_llm"
    assert orchestrator["tokenizer_dir"] == str(ckpt_14b.resolve()) and orchestrator["context_window"] == "2048"
