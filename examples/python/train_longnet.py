"""A LongNet-style language-model training step on dattn's kernels.

One GPU (dattn.nn.MultiheadDilatedAttention, the torch ops underneath):

    PYTHONPATH=build/python python3 examples/python/train_longnet.py --seq 16384

Sequence parallel over GPUs (each rank holds seq / P tokens; the attention
goes through dattn's NCCL ring, dattn.distributed.RingAttention), under
torchrun; parameters are replicated and their gradients summed:

    PYTHONPATH=build/python torchrun --nproc-per-node 2 \\
        examples/python/train_longnet.py --seq 131072 --ring

It prints the loss and the time per step; the loss must fall.
"""
import argparse
import time

import torch
import torch.distributed as dist
from torch import nn

from dattn.distributed import RingAttention
from dattn.nn import DilatedAttention, MultiheadDilatedAttention

SEGMENTS, DILATIONS = [2048, 4096, 8192], [1, 2, 4]


class RingSelfAttention(nn.Module):
    """The same block as MultiheadDilatedAttention with the attention over
    the ring: projections and norm act on this rank's tokens only."""

    def __init__(self, embed_dim, num_heads, seq_len, batch, dtype):
        super().__init__()
        self.h = num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, device="cuda", dtype=dtype)
        self.norm = nn.LayerNorm(embed_dim, device="cuda", dtype=dtype)
        self.out = nn.Linear(embed_dim, embed_dim, device="cuda", dtype=dtype)
        text = DilatedAttention(SEGMENTS, DILATIONS).spec_text(
            num_heads, num_heads, embed_dim // num_heads, dtype, True)
        self.ring = RingAttention(text, seq_len=seq_len, batch=batch)

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, e // self.h).unbind(2)
        y = self.ring(q.contiguous(), k.contiguous(), v.contiguous()).reshape(b, n, e)
        return self.out(self.norm(y))


class Block(nn.Module):
    def __init__(self, attention, embed_dim, dtype):
        super().__init__()
        self.attention = attention
        self.ln1 = nn.LayerNorm(embed_dim, device="cuda", dtype=dtype)
        self.ln2 = nn.LayerNorm(embed_dim, device="cuda", dtype=dtype)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim, device="cuda", dtype=dtype),
                                 nn.GELU(),
                                 nn.Linear(4 * embed_dim, embed_dim, device="cuda", dtype=dtype))

    def forward(self, x):
        y = self.ln1(x)
        a = self.attention(y) if isinstance(self.attention, RingSelfAttention) else \
            self.attention(y, y, y, is_causal=True)[0]
        x = x + a
        return x + self.mlp(self.ln2(x))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq", type=int, default=16384)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--embed", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ring", action="store_true", help="sequence parallel (under torchrun)")
    a = p.parse_args()
    dtype = torch.bfloat16
    rank, world = 0, 1
    if a.ring:
        dist.init_process_group("nccl")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.cuda.set_device(rank % torch.cuda.device_count())
    torch.manual_seed(0)  # the same parameters and data on every rank

    def attention():
        if a.ring:
            return RingSelfAttention(a.embed, a.heads, a.seq, a.batch, dtype)
        return MultiheadDilatedAttention(a.embed, a.heads, DILATIONS, SEGMENTS, device="cuda",
                                         dtype=dtype)

    embed = nn.Embedding(a.vocab, a.embed, device="cuda", dtype=dtype)
    blocks = nn.ModuleList(Block(attention(), a.embed, dtype) for _ in range(a.layers))
    head = nn.Linear(a.embed, a.vocab, device="cuda", dtype=dtype)
    params = [*embed.parameters(), *blocks.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), device="cuda")
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    if a.ring:  # this rank's tokens, in the ring's order
        rows = blocks[0].attention.ring.rows.cuda()
        inputs, targets = inputs.index_select(1, rows), targets.index_select(1, rows)

    for step in range(a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = embed(inputs)
        for blk in blocks:
            x = blk(x)
        logits = head(x).float()
        loss = nn.functional.cross_entropy(logits.reshape(-1, a.vocab), targets.reshape(-1),
                                           reduction="sum") / (a.batch * a.seq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.ring:  # replicated parameters: the ranks' gradients add up
            for prm in params:
                dist.all_reduce(prm.grad)
            dist.all_reduce(loss.detach())
        opt.step()
        torch.cuda.synchronize()
        if rank == 0:
            print(f"step {step}: loss {loss.item():.4f}, {1e3 * (time.perf_counter() - t0):.1f} ms"
                  f" ({world} GPU{'s' if world > 1 else ''}, {a.seq} tokens)")
    if a.ring:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
