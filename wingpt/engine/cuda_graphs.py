"""Decode steps replayed as CUDA graphs, one per (batch, context) bucket.

Why: a decode step of the WiNGPT2-7B shape is ~1,500 small kernel launches; eagerly the host cannot issue
them as fast as the GPU runs them (docs/benchmarks/h100.md: 29.5 ms per single-stream step eagerly against
8.8 ms replayed). A step whose chunks are all single-token decodes is padded to the next batch bucket and
its context to the next multiple of `context_step`, its inputs are copied into static buffers, and the
bucket's captured graph is replayed. Padding rows write their K/V into a scratch slot and attend only to it.

`capture=False` runs the same padded static-shape step eagerly: CPU tests check it token for token
against the unpadded path.
"""

from __future__ import annotations

import torch

from wingpt.engine.model_runner import ModelRunner, StepInputs


def batch_buckets(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    return sorted({s for s in sizes if s < max_batch} | {max_batch})


class DecodeGraphs:
    def __init__(self, runner: ModelRunner, max_batch: int, max_context: int, capture: bool,
                 context_step: int = 256) -> None:
        self.runner = runner
        self.capture = capture
        self.buckets = batch_buckets(max_batch)
        self.context_step = context_step
        width = -(-max_context // context_step) * context_step
        dev = runner.device
        b = self.buckets[-1]
        self.tokens = torch.zeros(b, dtype=torch.long, device=dev)
        self.positions = torch.zeros(b, dtype=torch.long, device=dev)
        self.slots = torch.zeros(b, dtype=torch.long, device=dev)
        self.keys = torch.zeros(b, width, dtype=torch.long, device=dev)
        self.mask = torch.zeros(b, 1, 1, width, dtype=torch.bool, device=dev)
        self.rows = torch.arange(b, device=dev)
        self.max_context = width
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph | None, torch.Tensor | None]] = {}
        self._pool = torch.cuda.graph_pool_handle() if capture else None
        self.replays = 0

    def fits(self, step: StepInputs) -> bool:
        return (not step.prefills and step.decode_rows <= self.buckets[-1]
                and step.decode_keys.shape[1] <= self.max_context)

    def _static(self, b: int, k: int) -> StepInputs:
        return StepInputs(self.tokens[:b], self.positions[:b], self.slots[:b], b, self.keys[:b, :k],
                          self.mask[:b, :, :, :k], [], self.rows[:b])

    @torch.inference_mode()
    def run(self, step: StepInputs) -> torch.Tensor:
        n, width = step.decode_rows, step.decode_keys.shape[1]
        b = next(s for s in self.buckets if s >= n)
        k = -(-width // self.context_step) * self.context_step
        scratch = self.runner.scratch_slot
        self.tokens[:b].zero_()
        self.tokens[:n].copy_(step.tokens)
        self.positions[:b].zero_()
        self.positions[:n].copy_(step.positions)
        self.slots[:b].fill_(scratch)
        self.slots[:n].copy_(step.slots)
        self.keys[:b, :k].fill_(scratch)
        self.keys[:n, :width].copy_(step.decode_keys)
        self.mask[:b, :, :, :k].zero_()
        self.mask[:b, :, :, 0] = True
        self.mask[:n, :, :, :width].copy_(step.decode_mask)
        self.replays += 1
        if not self.capture:
            return self.runner.forward(self._static(b, k))[:n]
        graph, logits = self._graphs.get((b, k), (None, None))
        if graph is None:
            graph, logits = self._capture(b, k)
            self._graphs[(b, k)] = (graph, logits)
        graph.replay()
        return logits[:n]

    def _capture(self, b: int, k: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        static = self._static(b, k)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as CUDA graphs require
            for _ in range(2):
                self.runner.forward(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self.runner.forward(static)
        return graph, logits
