"""Shape-only checkpoints: WiNGPT2's shape and tokenizer, weights initialised on the device (GPU benchmarks)."""

from __future__ import annotations

from pathlib import Path

import torch

from wingpt.engine.checkpoint import load_model, qwen_v1_config, write_random_weights_checkpoint
from wingpt.tokenizer import load_tokenizer


def test_a_shape_only_checkpoint_loads_seeded_random_weights_in_the_asked_dtype(tmp_path: Path) -> None:
    model_dir = write_random_weights_checkpoint(tmp_path / "m", qwen_v1_config(64, 2, 4, 176, 151936, 4096))
    first = load_model(model_dir, "cpu", torch.bfloat16)
    second = load_model(model_dir, "cpu", torch.bfloat16)
    assert {p.dtype for p in first.parameters()} == {torch.bfloat16}
    assert first.config.num_hidden_layers == 2 and first.config.intermediate_size == 176
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    ids = torch.tensor([load_tokenizer(str(model_dir)).encode("胸口痛")])
    logits = first(ids).logits
    assert logits.shape == (1, ids.shape[1], 151936) and torch.isfinite(logits).all()

