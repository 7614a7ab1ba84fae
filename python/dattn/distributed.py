"""Attention over a ring of GPUs with torch.distributed: each rank holds
only its rows of the sequence (O(N/P) memory), and dattn's NCCL ring moves
the keys and values each rank needs from each peer (docs/ring.md).

    import torch.distributed as dist, dattn
    from dattn.distributed import RingAttention
    dist.init_process_group("nccl")              # torchrun sets the rest
    ring = RingAttention(spec, seq_len=131072, batch=1)
    q, k, v = (ring.shard(x) for x in (q_full, k_full, v_full))   # or make them local
    out = ring(q, k, v)                          # this rank's rows; differentiable
    out.sum().backward()

A rank's rows are `ring.rows` (global positions in local order: with the
zigzag layout two ranges). Tensors are CUDA tensors of the spec's dtype,
[batch, rows, heads, head_dim] (k and v with kv_heads), on this rank's GPU
(torch.cuda.current_device()). The ring has its own NCCL communicator over
the group's ranks (its unique id goes out over torch.distributed); a peer
that dies or hangs is an error after DATTN_RING_TIMEOUT seconds (default
60), never a hang.
"""

import torch
import torch.distributed as dist

from . import _dattn
from .ops import _DTYPES, _stream, _tensor
from .spec_text import one_line


class RingAttention:
    """This rank's part of `spec` over the ranks of `group` (default: the
    world) for one sequence length and batch. Every rank of the group makes
    one, with the same spec, seq_len and batch (checked: a difference is an
    error on every rank). A spec with a block_mask pattern takes its mask
    here, `block_mask=(crow_indices, col_indices)` as for dattn.attention
    (tensors on any device, or lists): the plan of what each rank receives
    depends on it, so it is fixed for the ring's life and every rank must
    give the same (checked with the plans)."""

    def __init__(self, spec, seq_len, batch=1, group=None, device=None, block_mask=None):
        if isinstance(spec, str):
            specs = _dattn.parse(one_line(spec), "<RingAttention>")
            if len(specs) != 1:
                raise ValueError(f"dattn: the spec text holds {len(specs)} attentions, "
                                 "expected 1")
            spec = specs[0]
        self.spec = spec
        self.seq_len = int(seq_len)
        self.batch = int(batch)
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None
                                   else torch.device(device).index)
        box = [_dattn.new_ring_unique_id() if self.rank == 0 else None]
        src = dist.get_global_rank(group, 0) if group is not None else 0
        dist.broadcast_object_list(box, src=src, group=group)
        rows, cols = [], []
        if block_mask is not None:
            if not (isinstance(block_mask, (tuple, list)) and len(block_mask) == 2):
                raise ValueError("dattn: block_mask is (crow_indices, col_indices)")
            rows, cols = (x.tolist() if hasattr(x, "tolist") else list(x) for x in block_mask)
        self._ring = _dattn.Ring(spec, self.device.index, self.rank, self.world, box[0],
                                 self.batch, self.seq_len, rows, cols)
        self.ranges = self._ring.shard()
        self.rows = torch.cat([torch.arange(b, e) for b, e in self.ranges]) if self.ranges \
            else torch.empty(0, dtype=torch.long)
        self._dtype = _DTYPES[spec.dtype]

    def shard(self, x):
        """This rank's rows of a whole-sequence tensor [batch, seq_len, ...]."""
        return x.index_select(1, self.rows.to(x.device))

    def __call__(self, q, k, v):
        """This rank's output rows (differentiable in q, k and v)."""
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.device != self.device:
                raise ValueError(f"dattn: {name} is on {t.device}, the ring's rank is on "
                                 f"{self.device}")
            if t.dtype != self._dtype:
                raise ValueError(f"dattn: {name} has dtype {t.dtype}, the spec's is "
                                 f"{self._dtype}")
        return _RingFunction.apply(q, k, v, self)

    def forward(self, q, k, v):
        """(out, lse) of this rank's rows, no autograd."""
        B, n, H, D = q.shape
        out = torch.empty((B, n, H, D), dtype=q.dtype, device=q.device)
        lse = torch.empty((B, H, n), dtype=torch.float32, device=q.device)
        need, _ = self._ring.workspace_sizes()
        ws = torch.empty(max(need, 1), dtype=torch.uint8, device=q.device)
        self._ring.forward(_tensor(q), _tensor(k), _tensor(v), _tensor(out), _tensor(lse),
                           ws.data_ptr(), need, _stream(q.device))
        return out, lse

    def backward(self, q, k, v, out, lse, dout):
        """(dq, dk, dv) of this rank's rows for the upstream gradient dout."""
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _, need = self._ring.workspace_sizes()
        ws = torch.empty(max(need, 1), dtype=torch.uint8, device=q.device)
        self._ring.backward(_tensor(q), _tensor(k), _tensor(v), _tensor(out), _tensor(lse),
                            _tensor(dout), _tensor(dq), _tensor(dk), _tensor(dv), ws.data_ptr(),
                            need, _stream(q.device))
        return dq, dk, dv


class _RingFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, ring):
        out, lse = ring.forward(q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.ring = ring
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = ctx.ring.backward(q, k, v, out, lse, dout.contiguous())
        return dq, dk, dv, None
