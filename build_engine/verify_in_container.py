"""Check the build against the real pinned release, inside its container (never run on the dev machines).

    docker run --gpus all -v $PWD:/work -v /models:/models -w /work \\
        nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3 \\
        python3 build_engine/verify_in_container.py --model-dir /models/WiNGPT2-7B-Chat --compare-hf

1. the TensorRT-LLM version and GPUs, and the Python packages Qwen v1's remote code imports;
2. every flag build_engine emits appears in `--help` of trtllm-build, quantize.py, convert_checkpoint.py;
3. with --model-dir: a short build (batch 4, 1024 tokens) through `python -m build_engine`, or
   --engine-dir to reuse one; then greedy generation for the seed's five comparison questions
   (repetition_penalty 1.1, as the model card recommends). For tp > 1 run it under `mpirun -n <tp>`.
4. with --compare-hf: the same questions through the bf16 Hugging Face model, and per question how
   many leading tokens the engine's answer shares with it -- what the quantization cost.
Exit status 1 if a flag is missing or a step fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the repo root

from build_engine import pins
from build_engine.calibration_sources import SEED_QUESTIONS

MAX_NEW_TOKENS = 64
REPETITION_PENALTY = 1.1
QWEN_REMOTE_CODE_PACKAGES = ("tiktoken", "einops", "transformers_stream_generator")
QWEN_REQUIREMENTS = "$TRTLLM_EXAMPLES/models/core/qwen/requirements.txt"
BACKEND_LIBRARY = Path("/opt/tritonserver/backends/tensorrtllm/libtriton_tensorrtllm.so")


def backend_names(library: bytes, names: tuple[str, ...]) -> list[str]:
    """Which of `names` the backend binary holds as NUL-terminated strings (its InputFieldsNames constants)."""
    return [n for n in names if b"\0" + n.encode() + b"\0" in library]


def check_backend_inputs(library: Path = BACKEND_LIBRARY) -> None:
    """Settle on the real container which seed / min-length input names its tensorrt_llm backend reads."""
    if not library.is_file():
        print(f"{library}: not found, cannot tell which seed input name the backend reads")
        return
    data = library.read_bytes()
    for label, names in (("seed", pins.TRTLLM_SEED_INPUTS), ("min tokens", pins.TRTLLM_MIN_TOKENS_INPUTS)):
        print(f"tensorrt_llm backend {label} input: {', '.join(backend_names(data, names)) or 'none of ' + str(names)}")


def missing_flags(help_text: str, flags: frozenset[str]) -> list[str]:
    """Flags of `flags` that the tool's --help does not mention (argparse prints every option)."""
    words = set(help_text.replace(",", " ").replace("[", " ").replace("]", " ").split())
    return sorted(f for f in flags if f not in words)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy answers share; greedy decoding diverges for good after the first."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _help(argv: list[str]) -> str:
    done = subprocess.run([*argv, "--help"], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def check_tools(examples: Path) -> bool:
    ok = True
    tools = {
        "trtllm-build": (["trtllm-build"], pins.TRTLLM_BUILD_FLAGS),
        "quantize.py": ([sys.executable, str(examples / pins.QUANTIZE_SCRIPT)], pins.QUANTIZE_FLAGS),
        "convert_checkpoint.py": ([sys.executable, str(examples / pins.QWEN_CONVERT_SCRIPT)], pins.CONVERT_FLAGS),
    }
    for name, (argv, flags) in tools.items():
        missing = missing_flags(_help(argv), flags)
        print(f"{name}: " + (f"MISSING {', '.join(missing)}" if missing else f"all {len(flags)} flags present"))
        ok &= not missing
    return ok


def check_environment() -> None:
    import tensorrt_llm

    found = tensorrt_llm.__version__
    differs = "" if found == pins.TRTLLM_VERSION else "  <-- differs"
    print(f"tensorrt_llm {found} (pinned {pins.TRTLLM_VERSION}){differs}")
    subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv"], check=False)
    for package in QWEN_REMOTE_CODE_PACKAGES:
        present = importlib.util.find_spec(package) is not None
        print(f"{package}: " + ("ok" if present else f"missing: pip install -r {QWEN_REQUIREMENTS}"))


def prompt_ids(model_dir: Path) -> list[list[int]]:
    from wingpt.chat_template import Message, build_prompt_ids
    from wingpt.tokenizer import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    return [build_prompt_ids(tok, [Message("user", q)], 1024 - MAX_NEW_TOKENS)[0] for q in SEED_QUESTIONS]


def generate_engine(engine_dir: Path, prompts: list[list[int]], eod: int) -> list[list[int]] | None:
    import tensorrt_llm
    import torch
    from tensorrt_llm.runtime import ModelRunnerCpp

    rank = tensorrt_llm.mpi_rank()
    runner = ModelRunnerCpp.from_dir(engine_dir=str(engine_dir), rank=rank)
    out = runner.generate([torch.tensor(p, dtype=torch.int32) for p in prompts], max_new_tokens=MAX_NEW_TOKENS,
                          end_id=eod, pad_id=eod, top_k=1, repetition_penalty=REPETITION_PENALTY,
                          output_sequence_lengths=True, return_dict=True)
    torch.cuda.synchronize()
    if rank != 0:
        return None
    ids, lengths = out["output_ids"], out["sequence_lengths"]
    return [[t for t in ids[i][0][len(p):lengths[i][0]].tolist() if t != eod] for i, p in enumerate(prompts)]


def generate_hf(model_dir: Path, prompts: list[list[int]], eod: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.bfloat16, device_map="cuda",
                                                 trust_remote_code=True).eval()
    answers = []
    for p in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([p], device="cuda"), max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 repetition_penalty=REPETITION_PENALTY, eos_token_id=eod, pad_token_id=eod)
        answers.append([t for t in out[0][len(p):].tolist() if t != eod])
    return answers


def short_build(args: argparse.Namespace) -> Path:
    from build_engine.cli import main as build_main
    from build_engine.cli import parse_args
    from build_engine.settings import BuildSettings, resolve

    argv = ["--model-dir", str(args.model_dir), "--quant", args.quant, "--max-batch-size", "4",
            "--max-seq-len", "1024", "--output-root", str(args.output_root), "--force"]
    if args.tp:
        argv += ["--tp", str(args.tp)]
    engine = resolve(BuildSettings.from_sources(parse_args(argv))).engine_dir
    if build_main(argv) != 0:
        raise SystemExit("verify: the short build failed")
    return engine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=Path, default=Path(pins.DEFAULT_EXAMPLES_DIR), help="TensorRT-LLM examples/")
    p.add_argument("--model-dir", type=Path, help="WiNGPT2 checkpoint: also build and generate")
    p.add_argument("--engine-dir", type=Path, help="reuse this engine instead of a short build")
    p.add_argument("--quant", default="int4_awq", help="quantization of the short build (int4_awq)")
    p.add_argument("--tp", type=int, default=0, help="tensor parallelism of the short build")
    p.add_argument("--output-root", type=Path, default=Path("/tmp/wingpt-verify"))
    p.add_argument("--compare-hf", action="store_true", help="compare with the bf16 Hugging Face model")
    args = p.parse_args(argv)

    check_environment()
    check_backend_inputs()
    ok = check_tools(args.examples)
    if args.model_dir is None:
        return 0 if ok else 1
    engine = args.engine_dir or short_build(args)
    prompts = prompt_ids(args.model_dir)
    from wingpt.tokenizer import load_tokenizer

    tok = load_tokenizer(str(args.model_dir))
    answers = generate_engine(engine, prompts, tok.eod_id)
    if answers is None:  # not MPI rank 0
        return 0 if ok else 1
    reference = generate_hf(args.model_dir, prompts, tok.eod_id) if args.compare_hf else None
    for i, (question, answer) in enumerate(zip(SEED_QUESTIONS, answers, strict=True)):
        print(f"\nQ{i + 1} {question}\nengine: {tok.decode(answer, skip_special=True)}")
        if reference is not None:
            shared = common_prefix(answer, reference[i])
            print(f"hf:     {tok.decode(reference[i], skip_special=True)}\n"
                  f"shared leading tokens: {shared} of {len(reference[i])}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
