"""The helpers of the in-container verification script (the script itself runs only in the pinned container)."""

from __future__ import annotations

from build_engine import pins
from build_engine.verify_in_container import backend_names, common_prefix, missing_flags

HELP = """usage: trtllm-build [-h] [--checkpoint_dir CHECKPOINT_DIR] [--max_seq_len MAX_SEQ_LEN,--max_decoder_seq_len]
  --use_paged_context_fmha {enable,disable}
"""


def test_missing_flags_reads_argparse_help():
    assert missing_flags(HELP, frozenset({"--checkpoint_dir", "--max_seq_len", "--use_paged_context_fmha"})) == []
    assert missing_flags(HELP, frozenset({"--max_num_tokens", "--checkpoint_dir"})) == ["--max_num_tokens"]
    assert missing_flags(HELP, frozenset({"--max_decoder_seq_len"})) == []


def test_every_pinned_flag_would_be_checked():
    assert "--use_paged_context_fmha" in pins.TRTLLM_BUILD_FLAGS
    assert "--calib_dataset" in pins.QUANTIZE_FLAGS and "--awq_block_size" in pins.QUANTIZE_FLAGS


def test_common_prefix_counts_shared_leading_tokens():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_backend_names_finds_whole_strings_only():
    library = b"\x7fELF\0random_seed\0min_length\0runtime_top_k\0"
    assert backend_names(library, pins.TRTLLM_SEED_INPUTS) == ["random_seed"]
    assert backend_names(library, pins.TRTLLM_MIN_TOKENS_INPUTS) == ["min_length"]
    assert backend_names(b"\0seed\0min_tokens\0", pins.TRTLLM_SEED_INPUTS) == ["seed"]
