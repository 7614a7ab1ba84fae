"""The ring from torch.distributed (dattn.distributed.RingAttention) on GPUs
(skipped, with the reason, without PyTorch or a GPU): each rank's output
rows and gradients equal the one-GPU attention's rows (dattn.attention,
itself checked against a float64 reference in test_ops.py) within the
dtype's tolerance. A ring of one rank runs on any GPU; two ranks, as two
processes, need two GPUs."""
import os
import socket

import pytest

import dattn

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
if not torch.cuda.is_available() or dattn.device_count() == 0:
    pytest.skip("no CUDA GPU", allow_module_level=True)

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from dattn.distributed import RingAttention  # noqa: E402

TOLERANCE = {"bf16": 2e-2, "fp16": 5e-3}
SPECS = [
    "attention dense { heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 causal = true "
    "ring_layout = zigzag branch { dense } }",
    "attention longnet { heads = 4 head_dim = 64 dtype = fp16 "
    "branch heads 0..1 { dilated(segment = 256, dilation = 1) } "
    "branch heads 2..3 { dilated(segment = 1024, dilation = 2, offset = head) } }",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rel(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


MASKED = ("attention masked { heads = 2 head_dim = 64 dtype = bf16 causal = true "
          "branch { block_mask(block = 64) | window(left = 16, right = 0) } }")


def ring_mask(n, seed=3, block=64):
    """A block mask for N = n, the same on every rank given the same seed."""
    nb = -(-n // block)
    kept = torch.rand(nb, nb, generator=torch.Generator().manual_seed(seed)) < 0.3
    return dattn.block_mask_tensors(kept.cuda())


def check_rank(rank, world, port, text, n, result, mask_seed=3):
    """One rank: its rows of the ring's output and gradients against the
    one-GPU attention's rows of the same inputs (drawn alike on every rank)."""
    torch.cuda.set_device(rank)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        spec = dattn.parse(text)[0]
        mask = ring_mask(n, mask_seed) if spec.needs_block_mask else None
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[spec.dtype]
        g = torch.Generator(device="cuda").manual_seed(5)
        q = torch.randn((1, n, spec.heads, spec.head_dim), generator=g, device="cuda").to(dt)
        k = torch.randn((1, n, spec.kv_heads, spec.head_dim), generator=g, device="cuda").to(dt)
        v = torch.randn(k.shape, generator=g, device="cuda").to(dt)
        dout = torch.randn(q.shape, generator=g, device="cuda").to(dt)
        full = [t.clone().requires_grad_() for t in (q, k, v)]
        want = dattn.attention(*full, spec, block_mask=mask)
        want.backward(dout)
        ring = RingAttention(spec, seq_len=n, batch=1, block_mask=mask)
        local = [ring.shard(t).detach().requires_grad_() for t in (q, k, v)]
        out = ring(*local)
        out.backward(ring.shard(dout))
        tol = TOLERANCE[spec.dtype]
        errors = {"out": rel(out, ring.shard(want))}
        for name, got, ref in zip(("dq", "dk", "dv"), local, full):
            errors[name] = rel(got.grad, ring.shard(ref.grad))
        bad = {k: e for k, e in errors.items() if not e < tol}
        if "out" in bad:  # where: the rows and heads that differ
            want_rows = ring.shard(want).double()
            diff = (out.double() - want_rows).norm(dim=3) / want_rows.norm(dim=3).clamp_min(1e-30)
            rows = ring.rows[(diff.amax(dim=(0, 2)) >= tol).cpu()]
            heads = (diff.amax(dim=(0, 1)) >= tol).nonzero().flatten().tolist()
            bad["wrong rows"] = f"{rows.numel()} of {len(ring.rows)}: {rows[:4].tolist()} .. " \
                                f"{rows[-4:].tolist()}, heads {heads}"
        result[rank] = bad or "ok"
    finally:
        dist.destroy_process_group()


def _spawned(rank, world, port, text, n, queue, mask_seed=3):
    result = {}
    try:
        check_rank(rank, world, port, text, n, result, mask_seed)
        queue.put((rank, result.get(rank)))
    except Exception as e:  # reported to the parent, which fails the test
        queue.put((rank, f"{type(e).__name__}: {e}"))


@pytest.mark.parametrize("text", SPECS + [MASKED])
def test_one_rank_ring_equals_the_one_gpu_attention(text):
    result = {}
    check_rank(0, 1, free_port(), text, 700, result)
    assert result[0] == "ok", result[0]


# 3000 rows: shards and zigzag chunks that are not whole tiles (on two H200s
# on 2026-11-23 this failed with relative errors near 0.31 on both ranks,
# while every example passed at 4096 through `dattn run` as two
# processes); 4096: whole tiles, which tells a ragged-N fault from one of
# the Python path.
@pytest.mark.parametrize("n", [3000, 4096])
@pytest.mark.parametrize("text", SPECS + [MASKED])
def test_two_ranks_as_two_processes(text, n):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs (one rank per GPU), found {torch.cuda.device_count()}")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_spawned, args=(r, 2, port, text, n, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results == {0: "ok", 1: "ok"}, results
    assert all(p.exitcode == 0 for p in procs)


def test_ranks_that_disagree_get_an_error():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs (one rank per GPU), found {torch.cuda.device_count()}")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    os.environ.setdefault("DATTN_RING_TIMEOUT", "60")
    # Rank 1 is given another sequence length, then another block mask:
    # both ranks must fail, each time.
    for case in ("sequence length", "block mask"):
        port = free_port()
        args = [(r, 2, port, SPECS[0], 1000 + 500 * r, queue) if case == "sequence length"
                else (r, 2, port, MASKED, 1000, queue, 3 + r) for r in range(2)]
        procs = [ctx.Process(target=_spawned, args=a) for a in args]
        for p in procs:
            p.start()
        results = dict(queue.get(timeout=300) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert all("disagree" in str(r) for r in results.values()), (case, results)
