"""torch.nn modules with the constructors users of the dilated-attention
ports know (fkodom's dilated-attention-pytorch and its forks), running on
dattn's kernels.

Head and offset assignment (as in those ports): the heads are split into
len(dilation_rates) contiguous groups, the first h % groups groups one head
larger; group i uses segment_lengths[i] and dilation_rates[i] with offset
i % dilation_rates[i]. Each head is in exactly one group.

The combination rule differs: dattn computes docs/semantics.md, in which a
head's output is the softmax over the multiset union of its branches' key
sets (LongNet's mixing by log-sum-exp). With one group per head, as here,
that is the head's own dilated attention. The ports divide the summed group
outputs by the number of groups, so their outputs are smaller by that
factor; dattn does not rescale. A sequence length not divisible by the
segment lengths is accepted: the last segment is shorter (the ports
require divisibility).

``key_padding_mask`` (b, n), True where a position is padding (as in
``torch.nn.MultiheadAttention``), takes right padding: in each row the
padded positions are a suffix. Row i then runs as a sequence of its
n_i unpadded positions (segments keep their places; the last one ends at
n_i), which excludes the padded keys from every key set, and its padded
query rows get zeros. Rows of equal length run together, one call per
distinct length; the mask is read on the host (a synchronization, and a
graph break under torch.compile).
"""

import torch
from torch import nn

from . import builder
from .ops import attention
from .spec_text import one_line

_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


class DilatedAttention(nn.Module):
    """Dilated attention over (b, n, h, d) queries, keys and values (GQA:
    keys and values may have fewer heads, dividing h)."""

    def __init__(self, segment_lengths, dilation_rates, softmax_scale=None,
                 attention_dropout=0.0):
        super().__init__()
        if len(segment_lengths) != len(dilation_rates) or not segment_lengths:
            raise ValueError("segment_lengths and dilation_rates need the same, nonzero length")
        if attention_dropout:
            raise NotImplementedError("dattn: attention_dropout is not supported (use 0.0)")
        self.segment_lengths = [int(s) for s in segment_lengths]
        self.dilation_rates = [int(r) for r in dilation_rates]
        self.softmax_scale = softmax_scale
        self._texts = {}

    def spec_text(self, heads, kv_heads, head_dim, dtype, causal):
        """The spec text (canonical, on one line) this module runs for those shapes."""
        key = (heads, kv_heads, head_dim, dtype, causal)
        text = self._texts.get(key)
        if text is None:
            groups = len(self.dilation_rates)
            if heads < groups:
                raise ValueError(f"dattn: {heads} heads for {groups} dilation groups")
            branches = [
                builder.branch(builder.dilated(s, r, i % r), heads=hs)
                for i, (s, r, hs) in enumerate(
                    zip(self.segment_lengths, self.dilation_rates,
                        builder.head_groups(heads, groups)))
            ]
            text = builder.spec(heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                                dtype=_DTYPE_NAMES[dtype], causal=causal,
                                scale=self.softmax_scale, branches=branches,
                                name="dilated_attention").canonical()
            text = one_line(text)  # as the ops carry it
            self._texts[key] = text
        return text

    def forward(self, query, key, value, is_causal=False, key_padding_mask=None):
        b, n, h, d = query.shape
        text = self.spec_text(h, key.shape[2], d, query.dtype, bool(is_causal))
        if key_padding_mask is None:
            return attention(query, key, value, text)
        lengths = unpadded_lengths(key_padding_mask, b, n)
        if all(length == n for length in lengths):
            return attention(query, key, value, text)
        rows = [None] * b
        for length in sorted(set(lengths)):
            idx = [i for i in range(b) if lengths[i] == length]
            if length == 0:  # nothing but padding: zeros
                for i in idx:
                    rows[i] = query.new_zeros(n, h, d)
                continue
            pick = torch.tensor(idx, device=query.device)
            y = attention(query[pick, :length], key[pick, :length], value[pick, :length], text)
            y = torch.nn.functional.pad(y, (0, 0, 0, 0, 0, n - length))
            for j, i in enumerate(idx):
                rows[i] = y[j]
        return torch.stack(rows)


def unpadded_lengths(key_padding_mask, b, n):
    """Per row of a (b, n) key padding mask (True: padding), how many
    positions lead before the padding; ValueError unless the padding of
    every row is a suffix (right padding)."""
    mask = torch.as_tensor(key_padding_mask)
    if mask.shape != (b, n):
        raise ValueError(f"dattn: key_padding_mask has shape {tuple(mask.shape)}, "
                         f"expected (batch, seq) = ({b}, {n})")
    mask = mask.to(torch.bool)
    lengths = (~mask).sum(dim=1)
    suffix = torch.arange(n, device=mask.device)[None, :] >= lengths[:, None]
    if not torch.equal(mask, suffix):
        bad = (mask != suffix).any(dim=1).nonzero()[0, 0].item()
        raise ValueError(f"dattn: key_padding_mask row {bad} pads positions that are not a "
                         "suffix; dattn takes right padding only (True on the last "
                         "positions of a row)")
    return lengths.tolist()


class MultiheadDilatedAttention(nn.Module):
    """LongNet's multi-head dilated attention block on (b, n, embed_dim):
    q, k, v projections, DilatedAttention, an optional LayerNorm (MAGNETO's
    sub-LN) and the output projection; returns (x, None)."""

    def __init__(self, embed_dim, num_heads, dilation_rates, segment_lengths, dropout=0.0,
                 bias=True, layer_norm=True, layer_norm_eps=1e-5, gamma_init=1.0,
                 device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        head_dim = embed_dim // num_heads
        if head_dim % 8 or not 32 <= head_dim <= 256:
            raise ValueError(f"head_dim {head_dim}: dattn needs a multiple of 8 in [32, 256]")
        self.num_heads = num_heads
        self.gamma_init = gamma_init
        kw = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.attention = DilatedAttention(segment_lengths, dilation_rates,
                                          attention_dropout=dropout)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, **kw) if layer_norm else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self._reset_parameters()

    def _reset_parameters(self):
        # As the ports do (MAGNETO): Xavier, with gain gamma_init on v and out.
        nn.init.xavier_normal_(self.q_proj.weight)
        nn.init.xavier_normal_(self.k_proj.weight)
        nn.init.xavier_normal_(self.v_proj.weight, gain=self.gamma_init)
        nn.init.xavier_normal_(self.out_proj.weight, gain=self.gamma_init)
        for p in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if p.bias is not None:
                nn.init.constant_(p.bias, 0)

    def forward(self, query, key, value, is_causal=False, key_padding_mask=None):
        b, n, e = query.shape
        h = self.num_heads
        q = self.q_proj(query).view(b, n, h, e // h)
        k = self.k_proj(key).view(b, n, h, e // h)
        v = self.v_proj(value).view(b, n, h, e // h)
        x = self.attention(q, k, v, is_causal=is_causal,
                           key_padding_mask=key_padding_mask).reshape(b, n, e)
        if self.norm is not None:
            x = self.norm(x)
        return self.out_proj(x), None


def create_multihead_dilated_attention(kind="auto", **kwargs):
    """MultiheadDilatedAttention on dattn's kernels. `kind` is accepted for
    the ports' factory signature: "auto" and "dattn" are the same here (the
    kernel family is chosen per GPU and spec by dattn itself)."""
    if kind not in ("auto", "dattn"):
        raise ValueError(f"dattn: unknown kind {kind!r} (auto or dattn)")
    return MultiheadDilatedAttention(**kwargs)


__all__ = ["DilatedAttention", "MultiheadDilatedAttention", "create_multihead_dilated_attention",
           "unpadded_lengths"]
