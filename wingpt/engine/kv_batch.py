"""Row operations on a transformers `DynamicCache` for in-flight batching.

The running batch is one left-padded cache of shape [rows, heads, length, head_dim] per layer.
New requests are prefilled on their own and joined by left-padding whichever side is shorter;
finished rows are dropped by index; padding that every row shares is trimmed away so the
batch's length stays bounded by its longest live sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache


def _left_pad(t: torch.Tensor, extra: int) -> torch.Tensor:
    return F.pad(t, (0, 0, extra, 0)) if extra else t


def concat_rows(
    cache: DynamicCache, mask: torch.Tensor, new_cache: DynamicCache, new_mask: torch.Tensor
) -> torch.Tensor:
    """Append `new_cache`'s rows to `cache` in place; returns the joined attention mask."""
    length, new_length = mask.shape[1], new_mask.shape[1]
    width = max(length, new_length)
    for layer, new_layer in zip(cache.layers, new_cache.layers, strict=True):
        layer.keys = torch.cat([_left_pad(layer.keys, width - length), _left_pad(new_layer.keys, width - new_length)])
        layer.values = torch.cat(
            [_left_pad(layer.values, width - length), _left_pad(new_layer.values, width - new_length)]
        )
    return torch.cat([F.pad(mask, (width - length, 0)), F.pad(new_mask, (width - new_length, 0))])


def keep_rows(cache: DynamicCache, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep only rows `keep` (index tensor), then trim the left padding they all share."""
    mask = mask.index_select(0, keep)
    shared_pad = int((mask.cumsum(1) == 0).sum(1).min()) if mask.shape[0] else 0
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, keep)[:, :, shared_pad:]
        layer.values = layer.values.index_select(0, keep)[:, :, shared_pad:]
    return mask[:, shared_pad:]
