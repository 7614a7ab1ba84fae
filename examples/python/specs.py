"""Specs from Python, without a GPU: LongNet's configuration built with the
builder (the same front end as spec files), its canonical text, the pairs
it attends at a sequence length, and what a ring of GPUs would move.

    PYTHONPATH=build/python python3 examples/python/specs.py [--seq N] [--ranks P]
"""
import argparse

import dattn
from dattn import _dattn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=65536)
    ap.add_argument("--ranks", type=int, default=8)
    args = ap.parse_args()

    # LongNet (Ding et al. 2023): every head in every branch, offset = head
    # mod dilation, the branches mixed by their softmax denominators.
    longnet = dattn.spec(
        heads=12, head_dim=128, dtype="bf16", name="longnet",
        branches=[dattn.dilated(w, r) for w, r in
                  [(2048, 1), (4096, 2), (8192, 4), (16384, 6), (32768, 12)]])
    print(longnet.canonical())
    assert dattn.parse(longnet.canonical())[0] == longnet  # the text round-trips

    n = args.seq
    pairs = _dattn.attended_pairs(longnet, n)
    print(f"N = {n}: {pairs:,} attended (query, key) pairs, {pairs / (n * n * 12):.2e} of dense; "
          f"{4 * pairs * 128 / 1e12:.1f} TFLOP per forward")

    plan = dattn.plan_ring(longnet, n, args.ranks)
    gib = 2 ** 30
    print(f"ring of {args.ranks}: {plan['shard_rows']} rows per rank; "
          f"{plan['total_bytes_forward'] / gib:.2f} GiB of K and V move forward, "
          f"{plan['total_bytes_backward'] / gib:.2f} GiB backward (all ranks)")
    for branch in plan["branches"]:
        print(f"  {branch['branch']}: {branch['primitive']}, "
              f"{branch['rows_received']} rows received")


if __name__ == "__main__":
    main()
