"""The paged KV cache's bookkeeping: fixed-size blocks, reference counts and prefix reuse.

The cache is `num_blocks` blocks of `block_size` token slots (model_runner.py holds the tensors). A
sequence owns a block table; a join or a leave moves no other sequence's KV, it only changes tables.

Prefix reuse (the torch twin of TensorRT-LLM's `enable_kv_cache_reuse`): a full block is named by a hash of
its tokens chained with the hash of the block before it, so equal names mean equal prefixes. A new sequence
first takes every leading block already cached under its names (shared, reference-counted), and computes
only the rest. Freed blocks keep their names until they are handed out again, least recently freed first,
so the hospital's preamble and a chat's earlier turns stay reusable while memory allows.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from wingpt.engine.sequence import Sequence


def block_hash(previous: bytes, tokens: list[int]) -> bytes:
    digest = hashlib.blake2b(previous, digest_size=16)
    digest.update(b"".join(t.to_bytes(4, "little", signed=True) for t in tokens))
    return digest.digest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_reuse: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one KV block of at least one token, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_reuse = prefix_reuse
        self._refs = [0] * num_blocks
        self._name: list[bytes | None] = [None] * num_blocks
        self._by_name: dict[bytes, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # oldest first
        self.peak_used = 0
        self.prefix_hit_tokens = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def room(self, seq: Sequence) -> int:
        """Tokens `seq` could add to its cache now: its own blocks' spare slots plus every free block."""
        return (len(seq.block_table) + self.num_free) * self.block_size - seq.computed

    def reuse_prefix(self, seq: Sequence) -> int:
        """Share the cached blocks of `seq`'s longest cached prefix; returns the tokens gained. At least one
        token is left to compute, since the next token's logits come from running the last one."""
        assert not seq.block_table and seq.computed == 0
        name = b""
        for i in range((len(seq.tokens) - 1) // self.block_size if self.prefix_reuse else 0):
            name = block_hash(name, seq.tokens[i * self.block_size:(i + 1) * self.block_size])
            block = self._by_name.get(name)
            if block is None:
                break
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1
            seq.block_table.append(block)
            seq.block_hashes.append(name)
        seq.computed = seq.prefilled = len(seq.block_table) * self.block_size
        self._note_peak()
        return seq.computed

    def grow(self, seq: Sequence, tokens: int) -> None:
        """Give `seq` blocks for `tokens` more tokens of KV; the caller checked `room`."""
        for _ in range(self.blocks_for(seq.computed + tokens) - len(seq.block_table)):
            block, _ = self._free.popitem(last=False)
            name = self._name[block]
            if name is not None:  # evict the old contents' name
                self._name[block] = None
                if self._by_name.get(name) == block:
                    del self._by_name[name]
            self._refs[block] = 1
            seq.block_table.append(block)
        self._note_peak()

    def publish(self, seq: Sequence) -> None:
        """Name the blocks `seq` has filled by prefill since the last call, so later sequences can share them.

        Blocks filled by decode steps are not shared: a decode computes a token's K/V with other kernels and
        shapes than a prefill, so its bits can differ, and a later request reusing them could decode other
        tokens than the same request run cold (found through the UI: a follow-up question answered
        differently than the same conversation sent again). A chat's answer is therefore recomputed, once, by
        the next turn's prefill, whose blocks are then shared."""
        full = min(seq.computed, seq.prefilled) // self.block_size
        name = seq.block_hashes[-1] if seq.block_hashes else b""
        for i in range(len(seq.block_hashes), full):
            name = block_hash(name, seq.tokens[i * self.block_size:(i + 1) * self.block_size])
            seq.block_hashes.append(name)
            block = seq.block_table[i]
            if name not in self._by_name:
                self._by_name[name] = block
                self._name[block] = name

    def release(self, seq: Sequence) -> None:
        """Drop `seq`'s hold on its blocks (finished, cancelled or preempted); its KV must be recomputed."""
        for block in reversed(seq.block_table):  # the tail first, so a prefix outlives its continuations
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
        seq.block_table, seq.block_hashes, seq.computed, seq.prefilled = [], [], 0, 0

    def _note_peak(self) -> None:
        self.peak_used = max(self.peak_used, self.num_used)
