"""dattn against what its users would run instead, on the current GPU:

    python -m dattn.bench [--seq 16384,65536] [--backward] [--png bench.png]

The configuration is LongNet's head-partitioned one (the ports' split of
heads into groups, one (segment, dilation) per group, offset = group index
mod dilation; default: segments 2048, 4096, 8192, dilations 1, 2, 4, 12
heads of 128, bf16, batch 1). For each N it times, forward (and with
--backward forward+backward):

- dattn: ``dattn.nn.DilatedAttention`` (the torch op);
- the PyTorch composite: per group, gather each segment's rows of the
  group's residue, ``scaled_dot_product_attention`` (whichever backend torch
  picks), scatter back; rows outside a head's residue are zero, as in
  dattn's semantics;
- FlexAttention with a mask_mod of the same pattern (--flex; its block mask
  is built once per N, outside the timing, and its build time printed).

Times are CUDA-event medians over --iters runs, each after an L2 flush,
on fresh random inputs. Effective TFLOP/s count only the attended pairs
(4 * pairs * head_dim per forward, 3.5 times that forward+backward), the
same count for every implementation. Peak memory is the allocator's peak
during the timed runs, above the inputs. Each implementation's output is
compared with dattn's (relative error), so a fast wrong one shows.
With matplotlib installed, --png writes TFLOP/s against N.

--block-mask DENSITY runs a block mask given at run time instead: a spec
with one `block_mask(block = --block)` branch over every head, its kept
block pairs drawn at that density (the diagonal always kept, so every row
has keys; the same draw for each implementation), dattn through
``dattn.attention(..., block_mask=...)``, the composite as SDPA with the
dense [N, N] boolean mask, and FlexAttention with a mask_mod that reads the
kept-block matrix.

--overhead measures instead what the torch op adds per call over the
extension's launch: host time per call of ``torch.ops.dattn.forward`` and of
``dattn.attention`` against the extension's ``forward`` on preallocated
tensors, at a size where the kernel is shorter than either (N = 256).
"""

import argparse
import math
import sys
import time

from .builder import head_groups


def _ints(text):
    return [int(x) for x in text.split(",") if x]


def _parser():
    p = argparse.ArgumentParser(prog="python -m dattn.bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--seq", type=_ints, default=[16384, 65536],
                   help="sequence lengths, comma-separated (multiples of the largest segment)")
    p.add_argument("--segments", type=_ints, default=[2048, 4096, 8192])
    p.add_argument("--dilations", type=_ints, default=[1, 2, 4])
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--backward", action="store_true", help="also time forward+backward")
    p.add_argument("--flex", action="store_true", help="also time FlexAttention")
    p.add_argument("--png", help="write a plot of TFLOP/s against N (needs matplotlib)")
    p.add_argument("--block-mask", type=float, metavar="DENSITY",
                   help="time a run-time block mask of this density instead of LongNet")
    p.add_argument("--block", type=int, default=128, help="--block-mask's block rows")
    p.add_argument("--causal", action="store_true", help="--block-mask: causal as well")
    p.add_argument("--overhead", action="store_true",
                   help="measure the op's per-call overhead over the extension's launch")
    return p


def _check(args):
    if args.block_mask is not None:
        if not 0 < args.block_mask <= 1:
            raise SystemExit(f"dattn.bench: --block-mask takes a density in (0, 1], got "
                             f"{args.block_mask}")
        if args.block < 16 or args.block & (args.block - 1):
            raise SystemExit(f"dattn.bench: --block {args.block} is not a power of two >= 16")
        for n in args.seq:
            if n % args.block:
                raise SystemExit(f"dattn.bench: N = {n} is not a multiple of --block "
                                 f"{args.block}")
        return
    if len(args.segments) != len(args.dilations) or not args.segments:
        raise SystemExit("dattn.bench: --segments and --dilations need the same, nonzero length")
    if args.heads < len(args.segments):
        raise SystemExit(f"dattn.bench: {args.heads} heads for {len(args.segments)} groups")
    for w, r in zip(args.segments, args.dilations):
        if w % r:
            raise SystemExit(f"dattn.bench: segment {w} is not a multiple of its dilation {r}")
    for n in args.seq:
        if n % max(args.segments):
            raise SystemExit(f"dattn.bench: N = {n} is not a multiple of the largest segment "
                             f"{max(args.segments)} (the composite needs whole segments)")


def _groups(args):
    """(heads, segment, dilation, offset) per group, as dattn.nn assigns them."""
    out = []
    for i, (hs, w, r) in enumerate(zip(head_groups(args.heads, len(args.segments)),
                                       args.segments, args.dilations)):
        out.append((hs, w, r, i % r))
    return out


def composite(q, k, v, groups, scale):
    """The ports' way: per group gather the residue rows of each segment,
    attend with SDPA, scatter back (other rows stay zero)."""
    import torch
    import torch.nn.functional as F
    b, n, _, d = q.shape
    out = torch.zeros_like(q)
    for hs, w, r, o in groups:
        h0, h1 = hs.start, hs.stop

        def take(t):
            x = t[:, :, h0:h1].reshape(b, n // w, w, h1 - h0, d)[:, :, o::r]
            return x.reshape(b * (n // w), -1, h1 - h0, d).transpose(1, 2)

        y = F.scaled_dot_product_attention(take(q), take(k), take(v), scale=scale)
        y = y.transpose(1, 2).reshape(b, n // w, -1, h1 - h0, d)
        view = out[:, :, h0:h1].view(b, n // w, w, h1 - h0, d)
        view[:, :, o::r] = y  # out's storage: the scatter
    return out


def flex_mask(groups, n, device):
    """FlexAttention's block mask of the pattern (built outside the timing)."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask
    heads = sum(len(hs) for hs, *_ in groups)
    seg = torch.empty(heads, dtype=torch.int64, device=device)
    dil = torch.empty_like(seg)
    off = torch.empty_like(seg)
    for hs, w, r, o in groups:
        seg[hs.start:hs.stop], dil[hs.start:hs.stop], off[hs.start:hs.stop] = w, r, o

    def keep(b, h, qi, kj):
        w, r, o = seg[h], dil[h], off[h]
        return (qi // w == kj // w) & (qi % r == o) & (kj % r == o)

    return create_block_mask(keep, None, heads, n, n, device=device)


def block_mask_case(args, n, dev, dtype, scale):
    """--block-mask at sequence length n: (spec text, attended pairs, the
    implementations as [(name, fn(q, k, v))], FlexAttention's mask_mod).
    The kept-block matrix is drawn once per n (seed n), the diagonal kept."""
    import torch
    import dattn
    nb, block = n // args.block, args.block
    kept = torch.rand(nb, nb, generator=torch.Generator().manual_seed(n)) < args.block_mask
    kept.fill_diagonal_(True)
    if args.causal:
        kept = kept.tril()
    text = (f"attention masked {{ heads = {args.heads} head_dim = {args.head_dim} "
            f"dtype = {args.dtype} causal = {str(args.causal).lower()} "
            f"branch {{ block_mask(block = {block}) }} }}")
    kept = kept.to(dev)
    mask = dattn.block_mask_tensors(kept)
    dense = kept.repeat_interleave(block, 0).repeat_interleave(block, 1)
    if args.causal:  # the diagonal blocks keep their lower triangle only
        dense &= torch.ones(n, n, dtype=torch.bool, device=dev).tril()
    pairs = int(dense.sum().item()) * args.heads * args.batch

    def composite_masked(q, k, v):
        y = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=dense, scale=scale)
        return y.transpose(1, 2)

    def keep(b, h, qi, kj):
        ok = kept[qi // block, kj // block]
        return ok & (kj <= qi) if args.causal else ok

    impls = [("dattn", lambda q, k, v: dattn.attention(q, k, v, text, block_mask=mask)),
             ("composite", composite_masked)]
    return text, pairs, impls, keep


def _time(fn, iters, flush):
    """Median ms of fn() over iters runs, each after an L2 flush."""
    import torch
    times = []
    for _ in range(iters):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def run(args):
    import torch
    import dattn
    from dattn import _dattn
    from dattn.nn import DilatedAttention
    if not torch.cuda.is_available() or dattn.device_count() == 0:
        raise SystemExit("dattn.bench: no CUDA GPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    dev = torch.device("cuda")
    groups = _groups(args) if args.block_mask is None else None
    module = DilatedAttention(args.segments, args.dilations)
    scale = 1.0 / math.sqrt(args.head_dim)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)  # more than any L2
    gpu = torch.cuda.get_device_name(dev)
    what = (f"a block mask of density {args.block_mask}, blocks of {args.block}"
            f"{', causal' if args.causal else ''}" if args.block_mask is not None else
            f"segments {args.segments}, dilations {args.dilations}")
    print(f"# {gpu}; torch {torch.__version__}; {args.heads} heads of {args.head_dim}, "
          f"{args.dtype}, batch {args.batch}; {what}; medians of {args.iters} after an L2 "
          "flush")
    print(f"{'impl':<10} {'N':>8} {'pass':<8} {'ms':>9} {'TFLOP/s':>8} {'peak MiB':>9} "
          f"{'rel.err':>9}")
    rows = []
    for n in args.seq:
        if args.block_mask is not None:
            text, pairs, impls, keep = block_mask_case(args, n, dev, dtype, scale)
        else:
            text = module.spec_text(args.heads, args.heads, args.head_dim, dtype, False)
            pairs = _dattn.attended_pairs(dattn.parse(text)[0], n, args.batch)
            impls = [("dattn", lambda q, k, v: module(q, k, v)),
                     ("composite", lambda q, k, v: composite(q, k, v, groups, scale))]
            keep = None
        flops = 4.0 * pairs * args.head_dim
        g = torch.Generator(device=dev).manual_seed(n)
        shape = (args.batch, n, args.heads, args.head_dim)
        q, k, v = (torch.randn(shape, generator=g, device=dev, dtype=dtype) for _ in range(3))
        # One dout for every implementation, so their gradients compare.
        dout = torch.randn(shape, generator=g, device=dev, dtype=dtype)
        if args.flex:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            t0 = time.perf_counter()
            mask = (flex_mask(groups, n, dev) if keep is None else
                    create_block_mask(keep, None, None, n, n, device=dev,
                                      BLOCK_SIZE=args.block))
            torch.cuda.synchronize()
            print(f"# FlexAttention block mask for N = {n}: {time.perf_counter() - t0:.1f} s")
            flex = torch.compile(flex_attention)

            def run_flex(q, k, v, mask=mask, flex=flex):
                y = flex(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                         block_mask=mask, scale=scale)
                return y.transpose(1, 2)

            impls.append(("flex", run_flex))
        want = {}
        for name, fn in impls:
            passes = [("forward", False)] + ([("fwd+bwd", True)] if args.backward else [])
            for label, backward in passes:
                qq, kk, vv = (t.detach().requires_grad_(backward) for t in (q, k, v))

                def step():
                    # As a training step after zero_grad(set_to_none=True):
                    # the gradients are the backward's tensors. Left in place,
                    # every later step would add into them (three extra
                    # elementwise kernels over q, k and v: ~0.6 ms at 64K).
                    qq.grad = kk.grad = vv.grad = None
                    y = fn(qq, kk, vv)
                    if backward:
                        y.backward(dout)
                    return y

                try:
                    y = step()  # warm-up: compiles, autotunes, checks
                    # Against the first implementation (dattn): the output
                    # forward, dQ forward+backward.
                    got = (qq.grad if backward else y).detach().float()
                    if want.get(label) is None:
                        want[label] = got
                    err = ((got - want[label]).norm() / want[label].norm()).item()
                    torch.cuda.synchronize()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    ms = _time(step, args.iters, flush)
                    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
                except torch.OutOfMemoryError:
                    print(f"{name:<10} {n:>8} {label:<8} {'out of memory':>9}")
                    torch.cuda.empty_cache()
                    continue
                tflops = flops * (3.5 if backward else 1.0) / (ms * 1e-3) / 1e12
                rows.append((name, n, label, ms, tflops, err))
                print(f"{name:<10} {n:>8} {label:<8} {ms:>9.3f} {tflops:>8.1f} {peak:>9.0f} "
                      f"{err:>9.2e}", flush=True)
    if args.png:
        plot(rows, args.png, gpu)
    return rows


def overhead(iters=2000):
    """Host microseconds per call: {"op", "attention", "launch",
    "run_forward", "allocations"} (the torch op, dattn.attention, the
    extension's forward on preallocated tensors, the ops' forward work
    without checks or dispatch, the two output allocations), each the
    median of 5 timings of `iters` back-to-back calls."""
    import torch
    from . import ops
    dev = torch.device("cuda", torch.cuda.current_device())
    text = ops.op_text("attention overhead { heads = 4 head_dim = 64 dtype = bf16 "
                       "branch { dense } }")
    q, k, v = (torch.randn(1, 256, 4, 64, device=dev, dtype=torch.bfloat16) for _ in range(3))
    a = ops._attention(text, dev.index, 256)[0]
    out, lse = torch.empty_like(q), torch.empty(1, 4, 256, device=dev)
    need, _ = a.workspace_sizes(1, 256)
    ws = torch.empty(max(need, 1), dtype=torch.uint8, device=dev)
    stream = torch.cuda.current_stream(dev).cuda_stream
    args = (ops._tensor(q), ops._tensor(k), ops._tensor(v), ops._tensor(out), ops._tensor(lse),
            ws.data_ptr() if need else 0, need, stream)
    calls = {
        "launch": lambda: a.forward(*args),
        "op": lambda: torch.ops.dattn.forward(q, k, v, text),
        "attention": lambda: ops.attention(q, k, v, text),
        # Where attention's time over the launch goes: the work without the
        # checks and dispatch (allocations, pointers, the launch), and the
        # two output allocations alone.
        "run_forward": lambda: ops._run_forward(q, k, v, text),
        "allocations": lambda: (q.new_empty((1, 256, 4, 64)),
                                q.new_empty((1, 4, 256), dtype=torch.float32)),
    }
    result = {}
    for name, fn in calls.items():
        for _ in range(50):
            fn()
        samples = []
        for _ in range(5):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) / iters * 1e6)
            torch.cuda.synchronize()
        samples.sort()
        result[name] = samples[2]
    return result


def plot(rows, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in sorted({r[0] for r in rows}):
        for label in sorted({r[2] for r in rows}):
            pts = [(r[1], r[4]) for r in rows if r[0] == name and r[2] == label]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{name} {label}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("effective TFLOP/s (attended pairs)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"# plot: {path}")


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.overhead:
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("dattn.bench: no CUDA GPU")
        us = overhead()
        print(f"# {torch.cuda.get_device_name()}: host time per call, median of 5 x 2000 calls "
              "(N = 256, 4 heads of 64, bf16, dense)")
        for name in ("launch", "op", "attention", "run_forward", "allocations"):
            print(f"{name:<12} {us[name]:8.1f} us")
        print(f"op overhead over the launch: {us['op'] - us['launch']:.1f} us "
              f"(dattn.attention: {us['attention'] - us['launch']:.1f} us)")
        return
    _check(args)
    run(args)


if __name__ == "__main__":
    sys.exit(main())
