"""PyTorch's own context parallelism, the baseline of the ring's efficiency
(issue 9): dense attention sharded over the GPUs of a torchrun job through
torch.distributed.tensor.experimental.context_parallel (ring attention
over SDPA), against one GPU running the whole sequence.

    torchrun --nproc-per-node 2 bench/torch_context_parallel.py --seq 131072 [--causal]

Prints per pass (forward, forward+backward) the one-GPU time T1, the
sharded time TP (slowest rank), and the efficiency T1 / (P TP), as
`dattn run --ranks P` prints its own. CUDA-event medians of --iters runs
on random bf16 inputs, after a warm-up.
"""
import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


def median_ms(fn, iters):
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=131072)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel

    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cuda", (world,))
    # PyTorch balances causal work by a zigzag-like layout and refuses to
    # do so without a causal mask: balance only causal runs.
    try:
        from torch.distributed.tensor.experimental import _attention as cp_impl
        cp_impl._cp_options.enable_load_balance = args.causal
    except (ImportError, AttributeError) as e:
        if not args.causal:
            raise SystemExit(f"cannot turn PyTorch's load balancing off ({e}); run --causal")
    shape = (1, args.heads, args.seq, args.head_dim)  # SDPA's [B, H, N, D]
    g = torch.Generator(device="cuda").manual_seed(0)  # every rank the same tensors
    q, k, v, dout = (torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16)
                     for _ in range(4))

    def one_pass(q, k, v, backward):
        q, k, v = (t.detach().requires_grad_(backward) for t in (q, k, v))

        def run():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
            if backward:
                out.backward(dout[:, :, : out.shape[2]])
        return run

    results = {}
    for label, backward in (("forward", False), ("fwd+bwd", True)):
        # One GPU, the whole sequence (every rank measures its own GPU).
        run = one_pass(q, k, v, backward)
        run()
        t1 = median_ms(run, args.iters)
        # Sharded: context_parallel shards the buffers along the sequence
        # (load-balanced for causal) and runs SDPA as ring attention.
        qs, ks, vs = (t.clone() for t in (q, k, v))
        with context_parallel(mesh, buffers=[qs, ks, vs], buffer_seq_dims=[2, 2, 2]):
            run = one_pass(qs, ks, vs, backward)
            run()
            dist.barrier()
            tp = median_ms(run, args.iters)
        slowest = torch.tensor([tp], device="cuda")
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        results[label] = (t1, slowest.item())
    if rank == 0:
        print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}, {world} GPUs, "
              f"N = {args.seq}, {args.heads} heads of {args.head_dim}, bf16, "
              f"{'causal' if args.causal else 'not causal'}; medians of {args.iters}")
        for label, (t1, tp) in results.items():
            print(f"torch context parallel {label}: one GPU {t1:.3f} ms, {world} GPUs "
                  f"{tp:.3f} ms, efficiency {t1 / (world * tp):.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
