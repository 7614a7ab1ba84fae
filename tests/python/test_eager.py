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

    def forward(q, k, v, spec):
        seen["forward spec"] = spec
        return q * 2 + k + v, torch.zeros(q.shape[0], q.shape[2], q.shape[1])

    def backward(q, k, v, out, lse, dout, spec, deterministic):
        seen["backward spec"] = spec
        seen["dense dout"] = dout.is_contiguous() and 0 not in dout.stride()
        seen["deterministic"] = deterministic
        return dout * 2, dout + 1, dout + 2

    monkeypatch.setattr(ops, "_run_forward", forward)
    monkeypatch.setattr(ops, "_run_backward", backward)
    q, k, v = (torch.randn(1, 8, 2, 4, requires_grad=True) for _ in range(3))
    out = ops._EagerAttention.apply(q, k, v, "attention t { }")
    assert torch.equal(out, q * 2 + k + v)
    out.sum().backward()
    ones = torch.ones_like(q)
    assert torch.equal(q.grad, 2 * ones)
    assert torch.equal(k.grad, 2 * ones)
    assert torch.equal(v.grad, 3 * ones)
    assert seen == {"forward spec": "attention t { }", "backward spec": "attention t { }",
                    "dense dout": True, "deterministic": False}


def test_eager_function_has_no_second_derivative(monkeypatch):
    monkeypatch.setattr(ops, "_run_forward",
                        lambda q, k, v, spec: (q * 1, torch.zeros(1)))
    monkeypatch.setattr(ops, "_run_backward",
                        lambda q, k, v, out, lse, dout, spec, det: (dout * 1, dout * 0, dout * 0))
    q, k, v = (torch.randn(2, 3, requires_grad=True) for _ in range(3))
    out = ops._EagerAttention.apply(q, k, v, "t")
    (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_eager_without_gradients_runs_the_forward_alone(monkeypatch):
    # No input requires grad, or grad mode is off: the forward's work with
    # no autograd node; otherwise the Function.
    calls = []

    def forward(q, k, v, spec):
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
