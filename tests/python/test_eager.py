"""attention()'s eager path (dattn.ops._EagerAttention) without a GPU: the
ops' work is replaced by stand-ins on CPU tensors, and the test checks the
wiring the GPU tests rely on: the spec text reaches both passes, the
gradients of q, k and v come back in order, the upstream gradient is made
dense (autograd hands `sum()`'s as a stride-0 expansion), the default
(non-deterministic) backward is asked for, and a second derivative is an
error rather than a silent zero. On a GPU, test_ops.py checks the real
kernels through this path against the reference and the custom op."""
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed")

from dattn import ops  # noqa: E402


def test_eager_function_wiring(monkeypatch):
    seen = {}

    mask = (torch.tensor([0, 1]), torch.tensor([0]))

    def forward(q, k, v, spec, rows, cols):
        seen["forward spec"] = spec
        seen["forward mask"] = rows is mask[0] and cols is mask[1]
        return q * 2 + k + v, torch.zeros(q.shape[0], q.shape[2], q.shape[1])

    def backward(q, k, v, out, lse, dout, spec, deterministic, rows, cols):
        seen["backward spec"] = spec
        seen["backward mask"] = rows is mask[0] and cols is mask[1]
        seen["dense dout"] = dout.is_contiguous() and 0 not in dout.stride()
        seen["deterministic"] = deterministic
        return dout * 2, dout + 1, dout + 2

    monkeypatch.setattr(ops, "_run_forward", forward)
    monkeypatch.setattr(ops, "_run_backward", backward)
    q, k, v = (torch.randn(1, 8, 2, 4, requires_grad=True) for _ in range(3))
    out = ops._EagerAttention.apply(q, k, v, "attention t { }", *mask)
    assert torch.equal(out, q * 2 + k + v)
    out.sum().backward()
    ones = torch.ones_like(q)
    assert torch.equal(q.grad, 2 * ones)
    assert torch.equal(k.grad, 2 * ones)
    assert torch.equal(v.grad, 3 * ones)
    assert seen == {"forward spec": "attention t { }", "backward spec": "attention t { }",
                    "forward mask": True, "backward mask": True, "dense dout": True,
                    "deterministic": False}


def test_eager_function_has_no_second_derivative(monkeypatch):
    monkeypatch.setattr(ops, "_run_forward",
                        lambda q, k, v, spec, rows, cols: (q * 1, torch.zeros(1)))
    monkeypatch.setattr(ops, "_run_backward",
                        lambda q, k, v, out, lse, dout, spec, det, rows, cols:
                        (dout * 1, dout * 0, dout * 0))
    q, k, v = (torch.randn(2, 3, requires_grad=True) for _ in range(3))
    out = ops._EagerAttention.apply(q, k, v, "t", None, None)
    (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_eager_without_gradients_runs_the_forward_alone(monkeypatch):
    # No input requires grad, or grad mode is off: the forward's work with
    # no autograd node; otherwise the Function.
    calls = []

    def forward(q, k, v, spec, rows=None, cols=None):
        calls.append(spec)
        return q + k + v, torch.zeros(1)

    monkeypatch.setattr(ops, "_run_forward", forward)
    frozen = [torch.randn(1, 4, 2, 4) for _ in range(3)]
    out = ops._eager(*frozen, "a")
    assert out.grad_fn is None and torch.equal(out, sum(frozen))
    trained = [t.clone().requires_grad_() for t in frozen]
    with torch.no_grad():
        assert ops._eager(*trained, "b").grad_fn is None
    assert ops._eager(*trained, "c").grad_fn is not None
    assert calls == ["a", "b", "c"]


def test_block_mask_tensors_from_a_dense_matrix():
    kept = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    rows, cols = ops.block_mask_tensors(kept)
    assert rows.tolist() == [0, 2, 2, 5] and cols.tolist() == [0, 2, 0, 1, 2]
    assert rows.dtype == cols.dtype == torch.int64
    with pytest.raises(ValueError, match="square"):
        ops.block_mask_tensors(torch.ones(2, 3, dtype=torch.bool))


def test_block_masks_are_checked_before_any_kernel(monkeypatch):
    # _mask_args on CPU tensors (the device check compares q's): a mask a
    # kernel would read out of bounds is an error naming the entry, checked
    # once per mask and again after an in-place change.
    q = torch.zeros(1, 150, 2, 8)  # N = 150, blocks of 64: NB = 3
    assert ops._mask_args(0, None, None, q) == (0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="has no block_mask pattern"):
        ops._mask_args(0, torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), q)
    with pytest.raises(ValueError, match="pass block_mask"):
        ops._mask_args(64, None, None, q)
    rows, cols = ops.block_mask_tensors(torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs ceil"):
        ops._mask_args(64, rows[:3], cols, q)
    with pytest.raises(ValueError, match="int64"):
        ops._mask_args(64, rows.int(), cols, q)
    checks = []
    real = ops._dattn.check_block_mask
    monkeypatch.setattr(ops._dattn, "check_block_mask",
                        lambda *a: (checks.append(a), real(*a))[1])
    args = ops._mask_args(64, rows, cols, q)
    assert args[2:] == (64, 3, 3) and args[0] == rows.data_ptr()
    ops._mask_args(64, rows, cols, q)
    assert len(checks) == 1  # checked once
    cols[2] = 7  # in place: out of [0, 3)
    with pytest.raises(ValueError, match="column index 7 in query block 2"):
        ops._mask_args(64, rows, cols, q)
    assert len(checks) == 2



def test_ops_take_block_masks_under_autograd_and_compile():
    # On meta tensors (no GPU): the ops' schemas carry the mask tensors, and
    # autograd and torch.compile(fullgraph=True) trace forward and backward
    # through the fake implementations with them.
    assert "Tensor? mask_rows=None, Tensor? mask_cols=None" in \
        str(torch.ops.dattn.forward.default._schema)
    assert "Tensor? mask_rows=None, Tensor? mask_cols=None" in \
        str(torch.ops.dattn.backward.default._schema)
    spec = "attention a { heads = 4 head_dim = 64 branch { block_mask(block = 64) } }"
    q, k, v = (torch.empty(1, 128, 4, 64, dtype=torch.bfloat16, device="meta",
                           requires_grad=True) for _ in range(3))
    rows = torch.empty(3, dtype=torch.int64, device="meta")
    cols = torch.empty(2, dtype=torch.int64, device="meta")

    def loss(q, k, v, rows, cols):
        return torch.ops.dattn.forward(q, k, v, spec, rows, cols)[0].sum()

    for f in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        for t in (q, k, v):
            t.grad = None
        f(q, k, v, rows, cols).backward()
        assert all(t.grad is not None and t.grad.shape == t.shape for t in (q, k, v))
