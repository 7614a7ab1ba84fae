"""The torch ops on a GPU (skipped, with the reason, without PyTorch or a
GPU): values and gradients against a float64 PyTorch reference of
docs/semantics.md built from dense membership masks (dattn's own membership
predicate, independent of the kernels' tiling), strided views, opcheck,
torch.compile(fullgraph=True), and errors for wrong inputs."""
import numpy as np
import pytest

import dattn
from dattn import _dattn

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
if not torch.cuda.is_available() or dattn.device_count() == 0:
    pytest.skip("no CUDA GPU", allow_module_level=True)

TOLERANCE = {"bf16": 1e-2, "fp16": 3e-3, "fp32": 1e-5}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

SPECS = [
    "attention gqa { heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 causal = true "
    "branch { window(left = 40, right = 0) | global(tokens = 9) } }",
    "attention multi { heads = 4 head_dim = 64 dtype = fp16 "
    "branch { dilated(segment = 64, dilation = 1) } "
    "branch { dilated(segment = 128, dilation = 2, offset = head) } }",
    "attention exact { heads = 2 head_dim = 32 dtype = fp32 branch { dense } }",
]


def reference(spec, q, k, v, block_mask=None):
    """O and LSE in float64 from dense masks: the multiset union of the
    branches' key sets is one softmax in which key j counts c_j times.
    block_mask: the run-time mask of a block_mask pattern, as host lists."""
    B, N, H, D = q.shape
    group = H // spec.kv_heads
    rows, cols = block_mask if block_mask is not None else ([], [])
    masks = np.frombuffer(_dattn.dense_masks(spec, N, rows, cols), dtype=np.uint8)
    counts = torch.from_numpy(masks.reshape(-1, H, N, N).sum(0).astype(np.float64)).to(q.device)
    q64, k64, v64 = (t.double() for t in (q, k, v))
    k64 = k64.repeat_interleave(group, dim=2)
    v64 = v64.repeat_interleave(group, dim=2)
    keep = counts > 0
    s = torch.einsum("bihd,bjhd->bhij", q64, k64) * spec.scale
    # Pairs outside every key set get a finite stand-in and p = 0, so rows
    # with no key have O = 0 and finite gradients (no -inf - -inf).
    logits = torch.where(keep, s + counts.clamp_min(1).log(), torch.full_like(s, -1e30))
    lse = torch.logsumexp(logits, dim=-1)
    p = torch.exp(logits - lse[..., None]) * keep
    out = torch.einsum("bhij,bjhd->bihd", p, v64)
    empty = ~keep.any(dim=-1).expand_as(lse)
    return out, torch.where(empty, torch.full_like(lse, float("-inf")), lse)


def rel(got, want):
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


def expect_gradients_match(out, ref_out, inputs, refs, tol):
    """Backward of a random upstream gradient through dattn and the float64
    reference: dQ, dK, dV within twice the dtype's tolerance, no NaN."""
    dout = torch.randn_like(out)
    out.backward(dout)
    ref_out.backward(dout.double())
    for name, t, ref in zip(("dq", "dk", "dv"), inputs, refs):
        assert not torch.isnan(t.grad).any(), name
        assert rel(t.grad, ref.grad) < 2 * tol, name


def inputs(spec, n, batch=2, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    dt = DTYPES[spec.dtype]
    shape_q = (batch, n, spec.heads, spec.head_dim)
    shape_kv = (batch, n, spec.kv_heads, spec.head_dim)
    return [torch.randn(s, generator=g, device="cuda").to(dt).requires_grad_()
            for s in (shape_q, shape_kv, shape_kv)]


@pytest.mark.parametrize("text", SPECS)
def test_values_and_gradients_match_the_reference(text):
    spec = dattn.parse(text)[0]
    q, k, v = inputs(spec, 300)
    out = dattn.attention(q, k, v, spec)
    _, lse = torch.ops.dattn.forward(q, k, v, spec.canonical())
    refs = [t.detach().clone().double().requires_grad_() for t in (q, k, v)]
    ref_out, ref_lse = reference(spec, *refs)
    tol = TOLERANCE[spec.dtype]
    assert not torch.isnan(out).any()
    assert rel(out, ref_out) < tol
    finite = ~torch.isinf(ref_lse)
    assert torch.equal(torch.isinf(lse), ~finite)
    assert (lse.double()[finite] - ref_lse[finite]).abs().max().item() < 1e-2

    expect_gradients_match(out, ref_out, (q, k, v), refs, tol)


def test_eager_path_equals_the_op():
    # dattn.attention in eager mode skips the custom op's dispatch
    # (_EagerAttention); it must give the op's outputs bit for bit and its
    # gradients (dQ is summed with fp32 atomics: equal within rounding).
    spec = dattn.parse(SPECS[1])[0]
    q, k, v = inputs(spec, 256, seed=11)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = dattn.attention(q, k, v, spec)
    out_op, _ = torch.ops.dattn.forward(q2, k2, v2, dattn.ops.op_text(spec))
    assert torch.equal(out, out_op)
    dout = torch.randn_like(out)
    out.backward(dout)
    out_op.backward(dout)
    for got, want in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        assert rel(got, want.double()) < 1e-3


def test_strided_views_packed_qkv():
    spec = dattn.parse(SPECS[1])[0]
    B, N, H, D = 1, 256, spec.heads, spec.head_dim
    qkv = torch.randn(B, N, 3, H, D, device="cuda", dtype=torch.float16, requires_grad=True)
    q, k, v = qkv.unbind(2)  # strided views of one tensor
    out = dattn.attention(q, k, v, spec)
    ref_out, _ = reference(spec, q.detach(), k.detach(), v.detach())
    assert rel(out, ref_out) < TOLERANCE["fp16"]
    out.sum().backward()
    assert qkv.grad is not None and not torch.isnan(qkv.grad).any()


def test_opcheck():
    spec = dattn.parse(SPECS[0])[0]
    q, k, v = (t.detach().requires_grad_() for t in inputs(spec, 128, batch=1))
    torch.library.opcheck(torch.ops.dattn.forward.default, (q, k, v, dattn.ops.op_text(spec)))


def test_compile_fullgraph_forward_and_backward():
    spec = dattn.parse(SPECS[0])[0]
    # Made outside the compiled function; on several lines, which
    # dattn.attention puts on one (inductor writes it into Python source).
    text = spec.canonical()
    assert "\n" in text

    def loss(q, k, v):
        return dattn.attention(q, k, v, text).float().square().sum()

    q, k, v = inputs(spec, 256, batch=1, seed=3)
    eager = loss(q, k, v)
    eager.backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    compiled = torch.compile(loss, fullgraph=True)(q, k, v)
    compiled.backward()
    assert torch.allclose(compiled, eager, rtol=1e-3)
    for got, want in zip((q.grad, k.grad, v.grad), grads):
        assert rel(got, want.double()) < 1e-2


def test_cuda_graph_replays_on_new_inputs():
    # precompile loads the kernels, so the capture launches only; a replay
    # on new values in the captured tensors equals an eager call (outputs
    # poisoned before each replay).
    spec = dattn.parse(SPECS[1])[0]
    dattn.precompile(spec, backward=False)
    q, k, v = (t.detach() for t in inputs(spec, 256, batch=1, seed=5))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm the allocator off the capture
        dattn.attention(q, k, v, spec)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = dattn.attention(q, k, v, spec)
    for seed in (6, 7):
        for dst, src in zip((q, k, v), inputs(spec, 256, batch=1, seed=seed)):
            dst.copy_(src.detach())
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, dattn.attention(q, k, v, spec)), seed


def test_compile_says_when_the_ops_spec_text_has_line_breaks():
    spec = dattn.parse(SPECS[0])[0]
    text = spec.canonical()
    q, k, v = inputs(spec, 64, batch=1)

    def raw(q, k, v):
        return torch.ops.dattn.forward(q, k, v, text)[0]

    with pytest.raises(Exception, match="must be on one line"):
        torch.compile(raw, fullgraph=True)(q, k, v)


def test_lse_is_not_differentiable():
    spec = dattn.parse(SPECS[0])[0]
    q, k, v = inputs(spec, 64, batch=1)
    out, lse = torch.ops.dattn.forward(q, k, v, spec.canonical())
    assert out.requires_grad and not lse.requires_grad


def test_wrong_inputs_say_what():
    spec = dattn.parse(SPECS[0])[0]
    q, k, v = inputs(spec, 64, batch=1)
    with pytest.raises(ValueError, match="dtype"):
        dattn.attention(q.detach().float(), k, v, spec)
    with pytest.raises(ValueError, match="CUDA"):
        dattn.attention(q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), spec)
    with pytest.raises(ValueError):  # the runtime names the argument and the shapes
        dattn.attention(q, k[:, :32], v, spec)


MASKED = [
    "attention masked { heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 "
    "branch { block_mask(block = 64) } }",
    "attention masked_causal { heads = 2 head_dim = 64 dtype = fp16 causal = true "
    "branch { block_mask(block = 64) | window(left = 16, right = 0) } }",
]


@pytest.mark.parametrize("text", MASKED)
def test_block_masks_at_run_time(text):
    # A random kept-block matrix (N = 300: the last block is partial), built
    # into BSR tensors on the GPU; values and gradients against the dense
    # reference with the same mask, eager and compiled.
    spec = dattn.parse(text)[0]
    n, nb = 300, 5
    g = torch.Generator().manual_seed(9)
    kept = torch.rand(nb, nb, generator=g) < 0.4
    kept[1] = False  # a block row with nothing kept
    rows, cols = dattn.block_mask_tensors(kept.cuda())
    q, k, v = inputs(spec, n, batch=2, seed=4)
    out = dattn.attention(q, k, v, spec, block_mask=(rows, cols))
    refs = [t.detach().clone().double().requires_grad_() for t in (q, k, v)]
    ref_out, _ = reference(spec, *refs, block_mask=(rows.tolist(), cols.tolist()))
    tol = TOLERANCE[spec.dtype]
    assert not torch.isnan(out).any()
    assert rel(out, ref_out) < tol
    expect_gradients_match(out, ref_out, (q, k, v), refs, tol)

    op = dattn.ops.op_text(spec)
    compiled = torch.compile(lambda q, k, v: dattn.attention(q, k, v, op, block_mask=(rows, cols)),
                             fullgraph=True)
    assert rel(compiled(q, k, v), out.detach().double()) < 1e-3


def test_block_mask_errors_say_what():
    spec = dattn.parse(MASKED[0])[0]
    q, k, v = inputs(spec, 128, batch=1)  # NB = 2
    rows, cols = dattn.block_mask_tensors(torch.eye(2, dtype=torch.bool, device="cuda"))
    with pytest.raises(ValueError, match="pass block_mask"):
        dattn.attention(q, k, v, spec)
    with pytest.raises(ValueError, match="needs ceil"):
        dattn.attention(q, k, v, spec, block_mask=(rows[:2], cols))
    bad = cols.clone()
    bad[1] = 5
    with pytest.raises(ValueError, match="column index 5"):
        dattn.attention(q, k, v, spec, block_mask=(rows, bad))
    plain = dattn.parse(SPECS[0])[0]
    q2, k2, v2 = inputs(plain, 128, batch=1)
    with pytest.raises(ValueError, match="no block_mask pattern"):
        dattn.attention(q2, k2, v2, plain, block_mask=(rows, cols))


def test_dilated_attention_module_is_the_head_grouped_spec():
    from dattn.nn import DilatedAttention, MultiheadDilatedAttention

    module = DilatedAttention([64, 128], [1, 2])
    q, k, v = (torch.randn(1, 300, 4, 64, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))  # 300: not divisible by the segments
    got = module(q, k, v, is_causal=True)
    # Heads 0-1: segment 64, dilation 1, offset 0; heads 2-3: 128, 2, offset 1.
    text = ("attention t { heads = 4 head_dim = 64 dtype = bf16 causal = true "
            "branch heads 0..1 { dilated(segment = 64, dilation = 1, offset = 0) } "
            "branch heads 2..3 { dilated(segment = 128, dilation = 2, offset = 1) } }")
    want = dattn.attention(q, k, v, text)
    assert torch.equal(got, want)

    block = MultiheadDilatedAttention(256, 4, [1, 2], [64, 128], device="cuda",
                                      dtype=torch.bfloat16)
    x = torch.randn(2, 256, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y, none = block(x, x, x, is_causal=False)
    assert none is None and y.shape == x.shape
    y.float().sum().backward()
    assert x.grad is not None and not torch.isnan(x.grad).any()


def test_key_padding_mask_takes_right_padding():
    from dattn.nn import DilatedAttention, MultiheadDilatedAttention

    module = DilatedAttention([64, 128], [1, 2])
    b, n = 3, 300
    lengths = torch.tensor([300, 173, 0])
    mask = torch.arange(n)[None, :] >= lengths[:, None]  # True: padding
    q, k, v = (torch.randn(b, n, 4, 64, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    for causal in (False, True):
        got = module(q, k, v, is_causal=causal, key_padding_mask=mask.cuda())
        for i, length in enumerate(lengths.tolist()):
            assert torch.equal(got[i, length:], torch.zeros_like(got[i, length:])), i
            if length:  # the row alone, as a sequence of its unpadded positions
                want = module(q[i:i + 1, :length], k[i:i + 1, :length], v[i:i + 1, :length],
                              is_causal=causal)[0]
                assert rel(got[i, :length], want.double()) < 1e-2, (i, causal)
        # Padded keys are in no key set: their gradients are zero.
        q.grad = k.grad = v.grad = None
        got.float().sum().backward()
        for g in (k.grad, v.grad):
            assert not torch.isnan(g).any()
            assert torch.equal(g[1, 173:], torch.zeros_like(g[1, 173:]))
            assert torch.equal(g[2], torch.zeros_like(g[2]))
        assert k.grad[0].abs().sum() > 0
    # The module passes it through; a mask that is not right padding says so.
    block = MultiheadDilatedAttention(256, 4, [1, 2], [64, 128], device="cuda",
                                      dtype=torch.bfloat16)
    x = torch.randn(2, 256, 256, device="cuda", dtype=torch.bfloat16)
    y, _ = block(x, x, x, key_padding_mask=torch.arange(256)[None, :].expand(2, -1) >= 200)
    assert y.shape == x.shape and not torch.isnan(y).any()
    holes = torch.zeros(b, n, dtype=torch.bool)
    holes[1, 10] = True
    with pytest.raises(ValueError, match="row 1 pads positions that are not a suffix"):
        module(q, k, v, key_padding_mask=holes)
    with pytest.raises(ValueError, match="expected \\(batch, seq\\) = \\(3, 300\\)"):
        module(q, k, v, key_padding_mask=holes[:, :10])
