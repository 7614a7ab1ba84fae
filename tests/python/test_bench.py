"""python -m dattn.bench: its arguments without a GPU; on a GPU, a short run
whose composite must agree with dattn (the same semantics, computed the
PyTorch way)."""
import os
import subprocess
import sys

import pytest

from dattn import bench


def test_help_needs_no_gpu_and_names_what_it_compares():
    r = subprocess.run([sys.executable, "-m", "dattn.bench", "--help"], capture_output=True,
                       text=True, env=dict(os.environ), check=False)
    assert r.returncode == 0, r.stderr
    for word in ("composite", "FlexAttention", "--backward", "--png"):
        assert word in r.stdout


@pytest.mark.parametrize("argv, message", [
    (["--seq", "12288"], "not a multiple of the largest segment"),
    (["--segments", "2048,4096", "--dilations", "1"], "the same, nonzero length"),
    (["--segments", "1000", "--dilations", "3", "--seq", "3000"], "not a multiple of its dilation"),
    (["--heads", "2"], "2 heads for 3 groups"),
])
def test_bad_arguments_say_what(argv, message):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert message in str(e.value)


@pytest.mark.parametrize("argv, message", [
    (["--block-mask", "0"], "density in (0, 1]"),
    (["--block-mask", "0.1", "--block", "96"], "not a power of two"),
    (["--block-mask", "0.1", "--seq", "1000"], "not a multiple of --block 128"),
])
def test_bad_block_mask_arguments_say_what(argv, message):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert message in str(e.value)


@pytest.mark.parametrize("causal", [False, True])
def test_block_mask_case_agrees_with_itself(causal):
    # On the CPU: the pairs counted, the dense mask the composite uses and
    # FlexAttention's mask_mod are the same kept pairs; the composite runs.
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    argv = ["--block-mask", "0.3", "--block", "16", "--heads", "2", "--head-dim", "8"]
    args = bench._parser().parse_args(argv + (["--causal"] if causal else []))
    n = 128
    text, pairs, impls, keep = bench.block_mask_case(args, n, torch.device("cpu"),
                                                     torch.float32, 0.5)
    assert "block_mask(block = 16)" in text and f"causal = {str(causal).lower()}" in text
    qi, kj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    kept = keep(0, 0, qi, kj)
    assert pairs == int(kept.sum()) * 2
    assert bool(kept.diagonal().all())  # every row has a key
    assert not causal or not bool(kept.triu(1).any())
    q = torch.randn(1, n, 2, 8)
    composite = dict(impls)["composite"]
    y = composite(q, q, q)
    s = torch.einsum("bihd,bjhd->bhij", q, q) * 0.5
    p = torch.softmax(s.masked_fill(~kept, float("-inf")), dim=-1)
    assert torch.allclose(y, torch.einsum("bhij,bjhd->bihd", p, q), atol=1e-5)


def test_groups_follow_the_ports_assignment():
    args = bench._parser().parse_args(["--heads", "8", "--segments", "64,128,256",
                                       "--dilations", "1,2,4"])
    groups = bench._groups(args)
    assert [(list(h), w, r, o) for h, w, r, o in groups] == [
        ([0, 1, 2], 64, 1, 0), ([3, 4, 5], 128, 2, 1), ([6, 7], 256, 4, 2)]


def test_short_run_on_a_gpu_agrees_with_the_composite():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    import dattn
    if not torch.cuda.is_available() or dattn.device_count() == 0:
        pytest.skip("no CUDA GPU")
    args = bench._parser().parse_args(["--seq", "4096,8192", "--segments", "1024,2048",
                                       "--dilations", "1,2", "--heads", "4", "--head-dim", "64",
                                       "--iters", "3", "--backward"])
    rows = bench.run(args)
    assert len(rows) == 2 * 2 * 2  # (dattn, composite) x N x (forward, fwd+bwd)
    for name, n, label, ms, tflops, err in rows:
        assert ms > 0 and tflops > 0, (name, n, label)
        # bf16 against dattn's own output (forward) or dQ (forward+backward)
        assert err < (2e-2 if label == "forward" else 3e-2), (name, n, label, err)


@pytest.mark.parametrize("causal", [False, True])
def test_short_block_mask_run_on_a_gpu_agrees_with_the_composite(causal):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    import dattn
    if not torch.cuda.is_available() or dattn.device_count() == 0:
        pytest.skip("no CUDA GPU")
    argv = ["--block-mask", "0.2", "--seq", "2048,4096", "--heads", "4", "--head-dim", "64",
            "--iters", "3", "--backward"]
    rows = bench.run(bench._parser().parse_args(argv + (["--causal"] if causal else [])))
    assert len(rows) == 2 * 2 * 2  # (dattn, composite) x N x (forward, fwd+bwd)
    for name, n, label, ms, tflops, err in rows:
        assert ms > 0 and tflops > 0, (name, n, label)
        assert err < (2e-2 if label == "forward" else 3e-2), (name, n, label, err)


def test_overhead_on_a_gpu_is_measured():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    import dattn
    if not torch.cuda.is_available() or dattn.device_count() == 0:
        pytest.skip("no CUDA GPU")
    us = bench.overhead(iters=200)
    assert set(us) == {"launch", "op", "attention", "run_forward", "allocations"}
    assert 0 < us["launch"] < us["op"] * 1.5  # the op does the launch and more
    assert 0 < us["allocations"] < us["run_forward"] * 1.5  # it allocates and launches
