"""One sequence decoding alone, its step replayed as a CUDA graph over a static KV cache.

Why: decoding a single stream is bound by the host, not the GPU. For the WiNGPT2-7B shape on an H100 a
step is 7.9 ms of kernels spread over ~1,460 launches, and Python plus launch overhead make it 24-31 ms
(docs/benchmarks/h100.md); replayed as one captured graph the same step takes ~8.7 ms. The in-flight
batch's left-padded `DynamicCache` changes shape every step, so it cannot be captured; when exactly one
sequence is running, the engine moves it into this fixed-shape cache, decodes here, and moves it back as
soon as another request arrives.

`capture=False` runs the same static-cache step eagerly (CPU tests check it against the dynamic path).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, StaticCache


class SingleStreamGraph:
    """A static cache of `max_len` tokens for one sequence and the captured decode step over it."""

    def __init__(self, model: torch.nn.Module, max_len: int, capture: bool) -> None:
        self.model = model
        self.max_len = max_len
        device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        self.token = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        with torch.inference_mode():
            self.logits = self._forward()  # also allocates the cache's tensors
            if capture:
                self._capture()
        self.length = 0

    def _forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.token, past_key_values=self.cache, cache_position=self.position,
                         use_cache=True)
        return out.logits[:, -1, :]

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up before capture, off the default stream, as CUDA graphs require
            for _ in range(2):
                self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._forward()

    @torch.inference_mode()
    def load(self, cache: DynamicCache, mask_row: torch.Tensor) -> None:
        """Take over the one row of the batch's cache (its left padding dropped)."""
        real = int(mask_row.sum())
        pad = mask_row.shape[0] - real
        for static, layer in zip(self.cache.layers, cache.layers, strict=True):
            static.keys[:, :, :real].copy_(layer.keys[:, :, pad:])
            static.values[:, :, :real].copy_(layer.values[:, :, pad:])
            if hasattr(static, "cumulative_length"):  # transformers >= 5.2x writes at this counter, not cache_position
                static.cumulative_length.fill_(real)
        self.length = real

    @torch.inference_mode()
    def step(self, token: int) -> torch.Tensor:
        """Logits [1, vocab] for the next token after `token`, which is written at the next position."""
        self.token.fill_(token)
        self.position.fill_(self.length)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self._forward()
        self.length += 1
        return self.logits

    @torch.inference_mode()
    def unload(self) -> tuple[DynamicCache, torch.Tensor]:
        """The sequence as a one-row batch cache and its attention mask, to join others again."""
        cache = DynamicCache()
        for index, static in enumerate(self.cache.layers):
            cache.update(static.keys[:, :, :self.length].clone(), static.values[:, :, :self.length].clone(), index)
        mask = torch.ones((1, self.length), dtype=torch.long, device=self.token.device)
        return cache, mask
