"""Which sequences run how many tokens in the next step: admission by free KV blocks and a token budget.

Each step gets at most `max_num_tokens` tokens (TensorRT-LLM's knob name). Decodes go first (one token
each), then prefills in progress, then waiting sequences, in arrival order; a prefill longer than what is
left of the budget is cut into chunks, so a 2,000-token prompt does not stall the running streams for its
whole prefill. When a decode needs a block and none is free, the most recently admitted sequence is
preempted: its blocks are released and it waits at the head of the queue to be recomputed (its named
blocks usually survive in the prefix cache, so the recompute is mostly reuse). Nothing is ever allocated
beyond the budget: the alternative to a free block is waiting, never an out-of-memory.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from wingpt.engine.block_manager import BlockManager
from wingpt.engine.sequence import Sequence, Status


@dataclass
class Chunk:
    """Run tokens [start, start + length) of `seq` this step."""

    seq: Sequence
    start: int
    length: int

    @property
    def completes(self) -> bool:
        """The chunk reaches the end of the sequence's tokens, so its last position yields the next token."""
        return self.start + self.length == len(self.seq.tokens)


class Scheduler:
    def __init__(self, blocks: BlockManager, max_batch_size: int, max_num_tokens: int) -> None:
        self.blocks = blocks
        self.max_batch_size = max_batch_size
        self.max_num_tokens = max_num_tokens
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.preempted = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a finished or cancelled sequence out, releasing its blocks."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.release(seq)
        seq.status = Status.FINISHED

    def schedule(self) -> list[Chunk]:
        while True:
            chunks = self._schedule_once()
            if chunks or not self.running:
                return chunks
            # Every running sequence is stuck mid-prefill with no free block: free the newest one's.
            self._preempt(self.running[-1])

    def _schedule_once(self) -> list[Chunk]:
        budget = self.max_num_tokens
        chunks: list[Chunk] = []
        for seq in [s for s in self.running if s.uncomputed == 1]:
            if seq.status is not Status.RUNNING:  # preempted by an earlier decode in this loop
                continue
            while self.blocks.room(seq) < 1 and seq.status is Status.RUNNING:
                victim = self.running[-1]
                chunks = [c for c in chunks if c.seq is not victim]
                self._preempt(victim)
            if seq.status is Status.RUNNING and budget:
                chunks.append(self._take(seq, 1))
                budget -= 1
        for seq in [s for s in self.running if s.uncomputed > 1]:
            length = min(seq.uncomputed, budget, self.blocks.room(seq))
            if length > 0:
                chunks.append(self._take(seq, length))
                budget -= length
        while self.waiting and budget and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            self.blocks.reuse_prefix(seq)
            length = min(seq.uncomputed, budget, self.blocks.room(seq))
            if length <= 0:
                self.blocks.release(seq)  # wait for blocks; give back the shared prefix meanwhile
                break
            self.waiting.popleft()
            self.blocks.prefix_hit_tokens += seq.computed
            seq.status = Status.RUNNING
            self.running.append(seq)
            chunks.append(self._take(seq, length))
            budget -= length
        return chunks

    def _take(self, seq: Sequence, length: int) -> Chunk:
        chunk = Chunk(seq, seq.computed, length)
        self.blocks.grow(seq, length)
        return chunk

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.release(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.preempted += 1

    def advance(self, chunks: list[Chunk]) -> None:
        """After the step ran: the chunks' KV is in the cache."""
        for chunk in chunks:
            seq = chunk.seq
            seq.computed = chunk.start + chunk.length
            if chunk.length > 1 and chunk.start <= seq.prefilled:  # a prefill chunk, contiguous with the last
                seq.prefilled = seq.computed
            self.blocks.publish(seq)
