"""dattn's torch ops: forward and backward as ``torch.library`` custom ops on
CUDA tensors ``[B, N, heads, head_dim]`` (any strides the runtime accepts),
with fake implementations (``torch.compile(fullgraph=True)`` traces through
them) and autograd.

Outputs and workspaces are allocated by torch (its caching allocator); the
kernels run on torch's current stream. The spec travels as its text on one
line (``op_text``), so an op call is fully described by its arguments and
torch.compile can write it into the code it generates; compiled kernels are
cached per (spec, GPU) in this process and on disk.

    import dattn, torch
    spec = dattn.load("examples/longnet_head_partitioned.dattn")[0]
    out = dattn.attention(q, k, v, spec)          # differentiable
    out.sum().backward()

The log-sum-exp output of ``torch.ops.dattn.forward`` is for the backward
pass and is not differentiable (it has ``requires_grad`` False).

A spec with a ``block_mask`` pattern takes the kept block pairs at run time:
``attention(q, k, v, spec, block_mask=(crow_indices, col_indices))``, BSR
int64 tensors on q's GPU over the [NB, NB] block matrix (NB = ceil(N /
block)); ``block_mask_tensors(kept)`` builds them from a dense bool
[NB, NB] tensor. A mask is checked once, on first use (one read-back to the
host), and again after an in-place change.
"""

import atexit
import functools
import threading
import weakref
from typing import Optional

import torch

from . import _dattn
from .spec_text import one_line

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_compiled = {}
_lock = threading.Lock()
# Compiled attentions go before the interpreter tears modules down: torch
# keeps this module alive past nanobind's own teardown, which then reports
# every instance still held here as leaked.
atexit.register(_compiled.clear)


def _attention(spec_text, device, seq_len=0):
    """(compiled attention, its torch dtype, its block_mask block or 0) of
    `spec_text` on CUDA device
    index `device`: compiled on first use (tuned for that call's sequence
    length where a tuning database has entries), then a dictionary lookup."""
    key = (spec_text, device)
    entry = _compiled.get(key)
    if entry is None:
        with _lock:
            entry = _compiled.get(key)
            if entry is None:
                specs = _dattn.parse(spec_text, "<dattn.ops>")
                if len(specs) != 1:
                    raise ValueError(f"dattn: the spec text holds {len(specs)} attentions, "
                                     "expected 1")
                spec = specs[0]
                entry = _compiled[key] = (_dattn.Attention(spec, device, seq_len),
                                          _DTYPES[spec.dtype], spec.block_mask_block)
    return entry


def _tensor(t):
    # torch.Size and stride() are tuples, which the extension takes as they are.
    return (t.data_ptr(), t.shape, t.stride())


# torch's current stream of a device as a raw handle, without building a
# torch.cuda.Stream object per call (the public call costs microseconds).
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(device):
    if _raw_stream is not None:
        return _raw_stream(device.index)
    return torch.cuda.current_stream(device).cuda_stream


def _check(name, t, dtype):
    # The runtime checks shapes, strides, alignment and the device of the
    # pointers; these two it cannot see from a pointer.
    if not t.is_cuda:
        raise ValueError(f"dattn: {name} must be a CUDA tensor, got device {t.device}")
    if t.dtype != dtype:
        raise ValueError(f"dattn: {name} has dtype {t.dtype}, the spec's is {dtype}")


def op_text(spec):
    """The spec argument of the ops: a Spec's canonical text, or spec text as
    given, on one line (comments dropped). The ops parse it on their first
    call and raise SpecError there. Under torch.compile pass text, or call
    this on a Spec outside the compiled function: a call into the extension
    would break the graph. Text works inside it (this is pure Python)."""
    if isinstance(spec, str):
        if torch.compiler.is_compiling():  # traced: no cache in the graph
            return one_line(spec)
        return _one_line_cached(spec)
    return one_line(spec.canonical())


@functools.lru_cache(maxsize=256)
def _one_line_cached(text):
    # A module calls attention() with the same text every step.
    return one_line(text)


def _one_line_only(spec):
    # Traced (fake) calls are the ones inductor writes into generated code.
    if "\n" in spec:
        raise ValueError("dattn: under torch.compile the ops' spec text must be on one line: "
                         "pass dattn.ops.op_text(spec) (torch.compile writes string arguments "
                         "into the Python it generates)")


# Masks checked, by id of the column tensor: weak references to both
# tensors, their versions (bumped by in-place changes), N and the block. A
# mask freed and another made at the same address fails the identity check.
_checked_masks = {}


def _mask_args(block, rows, cols, q):
    """The extension's block-mask arguments (row offsets and column indices
    as device pointers, block, block rows, kept blocks) for a spec whose
    block_mask pattern has `block` rows (0: none), after checking them."""
    if not block:
        if rows is not None or cols is not None:
            raise ValueError("dattn: a block_mask was given, but the spec has no block_mask "
                             "pattern")
        return 0, 0, 0, 0, 0
    if rows is None or cols is None:
        raise ValueError("dattn: the spec has a block_mask pattern: pass block_mask="
                         "(crow_indices, col_indices) (dattn.block_mask_tensors builds them "
                         "from a dense [NB, NB] bool tensor)")
    n = q.shape[1]
    nb = -(-n // block)
    for name, t in (("crow_indices", rows), ("col_indices", cols)):
        if t.dtype != torch.int64 or t.dim() != 1 or t.device != q.device or \
                (t.numel() > 1 and t.stride(0) != 1):
            raise ValueError(f"dattn: block_mask {name} must be a contiguous 1-D int64 tensor "
                             f"on {q.device}, got {t.dtype} of shape {tuple(t.shape)} on "
                             f"{t.device}")
    if rows.numel() != nb + 1:
        raise ValueError(f"dattn: block_mask crow_indices has {rows.numel()} entries; N = {n} "
                         f"with blocks of {block} needs ceil(N / block) + 1 = {nb + 1}")
    seen = _checked_masks.get(id(cols))
    if seen is None or seen[0]() is not rows or seen[1]() is not cols or \
            seen[2:] != (rows._version, cols._version, n, block):
        # One read-back: a mask a kernel would read out of bounds is an
        # error here, never a fault there.
        _dattn.check_block_mask(block, rows.tolist(), cols.tolist(), n)
        if len(_checked_masks) > 64:
            _checked_masks.clear()
        _checked_masks[id(cols)] = (weakref.ref(rows), weakref.ref(cols), rows._version,
                                    cols._version, n, block)
    return rows.data_ptr(), cols.data_ptr(), block, nb, cols.numel()


def block_mask_tensors(kept):
    """(crow_indices, col_indices): the BSR int64 tensors of a block mask, on
    `kept`'s device, from `kept`, a square [NB, NB] tensor (bool or 0/1)
    whose entry (I, J) keeps the pair of query block I and key block J.
    Reads the number of kept blocks back to the host once: build a mask
    once and pass it every step."""
    if kept.dim() != 2 or kept.shape[0] != kept.shape[1]:
        raise ValueError(f"dattn: block_mask_tensors takes a square [NB, NB] tensor, got shape "
                         f"{tuple(kept.shape)}")
    nb = kept.shape[0]
    nz = kept.nonzero()  # row-major: sorted by row, then column
    cols = nz[:, 1].contiguous()
    rows = torch.zeros(nb + 1, dtype=torch.int64, device=kept.device)
    torch.cumsum(torch.bincount(nz[:, 0], minlength=nb), 0, out=rows[1:])
    return rows, cols


# The work of the ops, shared by the custom ops (torch.compile, opcheck,
# torch.ops.dattn.*) and the eager path of attention() (_EagerAttention).
def _run_forward(q, k, v, spec, mask_rows=None, mask_cols=None):
    a, dtype, block = _attention(spec, q.device.index, q.shape[1])
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check(name, t, dtype)
    mask = _mask_args(block, mask_rows, mask_cols, q)
    B, N, H, D = q.shape
    # new_empty: q's device and dtype without parsing them again per call.
    out = q.new_empty((B, N, H, D))
    lse = q.new_empty((B, H, N), dtype=torch.float32)
    need, _ = a.workspace_sizes(B, N)
    # From torch's caching allocator; freed on return, which is safe: later
    # work on this stream that reuses the memory runs after the kernels.
    ws = q.new_empty(need, dtype=torch.uint8) if need else None
    a.forward(_tensor(q), _tensor(k), _tensor(v), _tensor(out), _tensor(lse),
              ws.data_ptr() if need else 0, need, _stream(q.device), *mask)
    return out, lse


def _run_backward(q, k, v, out, lse, dout, spec, deterministic, mask_rows=None,
                  mask_cols=None):
    a, dtype, block = _attention(spec, q.device.index, q.shape[1])
    _check("dout", dout, dtype)
    mask = _mask_args(block, mask_rows, mask_cols, q)
    B, N = q.shape[0], q.shape[1]
    dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
    _, need = a.workspace_sizes(B, N)
    ws = q.new_empty(need, dtype=torch.uint8) if need else None
    a.backward(_tensor(q), _tensor(k), _tensor(v), _tensor(out), _tensor(lse), _tensor(dout),
               _tensor(dq), _tensor(dk), _tensor(dv), ws.data_ptr() if need else 0, need,
               _stream(q.device), deterministic, *mask)
    return dq, dk, dv


@torch.library.custom_op("dattn::forward", mutates_args=(), device_types="cuda")
def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: str,
             mask_rows: Optional[torch.Tensor] = None,
             mask_cols: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_forward(q, k, v, spec, mask_rows, mask_cols)


@_forward.register_fake
def _(q, k, v, spec, mask_rows=None, mask_cols=None):
    _one_line_only(spec)
    B, N, H, D = q.shape
    return q.new_empty((B, N, H, D)), q.new_empty((B, H, N), dtype=torch.float32)


@torch.library.custom_op("dattn::backward", mutates_args=(), device_types="cuda")
def _backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
              lse: torch.Tensor, dout: torch.Tensor, spec: str, deterministic: bool,
              mask_rows: Optional[torch.Tensor] = None,
              mask_cols: Optional[torch.Tensor] = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run_backward(q, k, v, out, lse, dout, spec, deterministic, mask_rows, mask_cols)


@_backward.register_fake
def _(q, k, v, out, lse, dout, spec, deterministic, mask_rows=None, mask_cols=None):
    _one_line_only(spec)
    # Like the real op: dense gradients whatever the inputs' strides.
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, spec, mask_rows, mask_cols = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, mask_rows, mask_cols)
    ctx.spec = spec
    # LSE is an output for the backward pass, not a differentiable result:
    # it comes back with requires_grad False, so a loss built only on it is
    # an error at backward() rather than a silently wrong gradient.
    ctx.mark_non_differentiable(lse)


def _backward_rule(ctx, dout, _dlse):
    q, k, v, out, lse, mask_rows, mask_cols = ctx.saved_tensors
    # Autograd may hand an expanded (stride 0) gradient: the kernels need
    # rows they can load, so give them a dense one.
    dq, dk, dv = torch.ops.dattn.backward(q, k, v, out, lse, dout.contiguous(), ctx.spec, False,
                                          mask_rows, mask_cols)
    return dq, dk, dv, None, None, None


_forward.register_autograd(_backward_rule, setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """attention() outside torch.compile: the ops' work and the same
    backward rule without the custom op's dispatch (the Python custom op
    goes through the dispatcher into Python for autograd and again for
    CUDA: tens of microseconds per call)."""

    @staticmethod
    def forward(ctx, q, k, v, spec, mask_rows, mask_cols):
        out, lse = _run_forward(q, k, v, spec, mask_rows, mask_cols)
        ctx.save_for_backward(q, k, v, out, lse, mask_rows, mask_cols)
        ctx.spec = spec
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse, mask_rows, mask_cols = ctx.saved_tensors
        dq, dk, dv = _run_backward(q, k, v, out, lse, dout.contiguous(), ctx.spec, False,
                                   mask_rows, mask_cols)
        return dq, dk, dv, None, None, None


def attention(q, k, v, spec, block_mask=None):
    """Attention of `spec` (a dattn.Spec, or spec text with one attention) over
    q [B, N, heads, head_dim] and k, v [B, N, kv_heads, head_dim] on a CUDA
    GPU; differentiable in q, k and v. A spec with a block_mask pattern needs
    `block_mask`: (crow_indices, col_indices), BSR int64 tensors on q's GPU
    (block_mask_tensors). Under torch.compile it is the dattn::forward op; in
    eager mode the same kernels without the op's dispatch."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not t.is_cuda:  # the ops exist for CUDA only: say so plainly
            raise ValueError(f"dattn: {name} must be a CUDA tensor, got device {t.device}")
    if block_mask is None:
        rows = cols = None
    elif isinstance(block_mask, (tuple, list)) and len(block_mask) == 2:
        rows, cols = block_mask
    else:
        raise ValueError("dattn: block_mask is (crow_indices, col_indices), two int64 tensors "
                         "(dattn.block_mask_tensors builds them from a dense bool tensor)")
    text = op_text(spec)
    if torch.compiler.is_compiling():
        out, _ = torch.ops.dattn.forward(q, k, v, text, rows, cols)
        return out
    return _eager(q, k, v, text, rows, cols)


def _eager(q, k, v, text, rows=None, cols=None):
    # With no gradient to track (inference, torch.no_grad, frozen inputs) the
    # forward alone: autograd's Function costs microseconds per call.
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _EagerAttention.apply(q, k, v, text, rows, cols)
    return _run_forward(q, k, v, text, rows, cols)[0]


def precompile(spec, device=None, backward=True, seq_len=0):
    """Compiles and loads `spec`'s kernels on `device` (default: the current
    CUDA device) now, forward and (with `backward`) backward, so that a later
    CUDA-graph capture finds them loaded. With `seq_len`, the kernels are the
    tuning databases' for that length (else the first call's length picks)."""
    index = torch.cuda.current_device() if device is None else torch.device(device).index
    a = _attention(op_text(spec), index, seq_len)[0]
    if backward:
        a.prepare_backward(False)
    return a
