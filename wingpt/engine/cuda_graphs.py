"""Decode steps replayed as CUDA graphs, one per (batch, context) bucket.

Why: a decode step of the WiNGPT2-7B shape is ~1,500 small kernel launches; eagerly the host cannot issue
them as fast as the GPU runs them (docs/benchmarks/h100.md: 29.5 ms per single-stream step eagerly against
8.8 ms replayed). A step whose chunks are all single-token decodes is padded to the next batch bucket and
its context to the next multiple of `context_step` (past 1,024 tokens a power of two), its inputs are
copied into static buffers, and the bucket's captured graph is replayed. Padding rows write their K/V into
the scratch block and attend only to its first slot.

`capture=False` runs the same padded static-shape step eagerly: CPU tests check it token for token
against the unpadded path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wingpt.engine.model_runner import ModelRunner, StepInputs


@dataclass
class _Bucket:
    inputs: StepInputs
    graph: torch.cuda.CUDAGraph | None = None
    logits: torch.Tensor | None = None


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
        width = self.context_bucket(max_context)
        dev = runner.device
        b = self.buckets[-1]
        self.tokens = torch.zeros(b, dtype=torch.long, device=dev)
        self.positions = torch.zeros(b, dtype=torch.long, device=dev)
        self.slots = torch.zeros(b, dtype=torch.long, device=dev)
        self.rows = torch.arange(b, device=dev)
        self.max_context = width
        # Per bucket: its own block-table buffers, graph and logits.
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self._pool = torch.cuda.graph_pool_handle() if capture else None
        self.replays = 0

    def context_bucket(self, width: int) -> int:
        """Multiples of `context_step` up to 4 of them, then powers of two: few graphs for long contexts."""
        step = self.context_step
        if width <= 4 * step:
            return -(-width // step) * step
        return 1 << (width - 1).bit_length()

    def fits(self, step: StepInputs) -> bool:
        return (not step.prefills and step.decode_rows <= self.buckets[-1]
                and step.decode_tables.shape[1] * self.runner.block_size <= self.max_context)

    def _bucket(self, b: int, k: int) -> _Bucket:
        bucket = self._buckets.get((b, k))
        if bucket is None:
            dev = self.runner.device
            tables = torch.zeros(b, -(-k // self.runner.block_size), dtype=torch.long, device=dev)
            lengths = torch.ones(b, dtype=torch.long, device=dev)
            bucket = _Bucket(StepInputs(self.tokens[:b], self.positions[:b], self.slots[:b], b, tables, lengths,
                                        [], self.rows[:b], self.rows[:b], self.rows[:b]))
            self._buckets[(b, k)] = bucket
        return bucket

    def _key(self, step: StepInputs) -> tuple[int, int]:
        b = next(s for s in self.buckets if s >= step.decode_rows)
        return b, self.context_bucket(step.decode_tables.shape[1] * self.runner.block_size)

    def will_capture(self, step: StepInputs) -> bool:
        """Running `step` captures its bucket's graph first (slow: two eager warm-up steps and the capture)."""
        bucket = self._buckets.get(self._key(step))
        return self.capture and (bucket is None or bucket.graph is None)

    @torch.inference_mode()
    def run(self, step: StepInputs) -> torch.Tensor:
        n, width = step.decode_rows, step.decode_tables.shape[1]
        b, k = self._key(step)
        scratch = self.runner.scratch_slot
        bucket = self._bucket(b, k)
        tables, lengths = bucket.inputs.decode_tables, bucket.inputs.decode_lengths
        self.tokens[:b].zero_()
        self.tokens[:n].copy_(step.tokens)
        self.positions[:b].zero_()
        self.positions[:n].copy_(step.positions)
        self.slots[:b].fill_(scratch)
        self.slots[:n].copy_(step.slots)
        tables.fill_(self.runner.scratch_block)
        tables[:n, :width].copy_(step.decode_tables)
        lengths.fill_(1)
        lengths[:n].copy_(step.decode_lengths)
        self.replays += 1
        if not self.capture:
            return self.runner.forward(bucket.inputs)[:n]
        if bucket.graph is None:
            bucket.graph, bucket.logits = self._capture(bucket.inputs)
        bucket.graph.replay()
        return bucket.logits[:n]

    def _capture(self, static: StepInputs) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
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
