"""dattn: dilated and sparse attention compiled to fast CUDA kernels.

Specs come from spec files (``dattn.load``: every attention of a file,
``dattn.Spec.load(path, name=None)``: one), spec text (``dattn.parse``,
``dattn.Spec.parse``) or the builder (``dattn.spec``), which writes spec
text and parses it, so every spec, however made, is checked by the same
front end and raises ``dattn.SpecError`` with file:line:col diagnostics.

    import dattn
    s = dattn.spec(heads=12, head_dim=128, dtype="bf16",
                   branches=[dattn.dilated(2048, 1), dattn.dilated(4096, 2),
                             dattn.branch(dattn.window(256, 0) | dattn.global_tokens(16),
                                          heads=range(0, 4))])
    print(s.canonical())

With PyTorch installed, ``dattn.attention(q, k, v, spec)`` runs a spec on
CUDA tensors through the torch custom ops of ``dattn.ops`` under
``torch.compile`` and without their dispatch in eager mode (autograd either
way); ``dattn.precompile(spec)`` loads its kernels ahead of a
CUDA-graph capture; ``dattn.nn`` holds the modules users of the
dilated-attention ports know; ``dattn.distributed.RingAttention`` runs a
spec over a ring of GPUs from torch.distributed, each rank holding its rows
only. The package itself does not need torch.
"""

import importlib.util
import os
import sys

from . import _dattn
from ._dattn import ArgumentError, Error, Spec, SpecError, device_count, load, nvrtc_version
from ._dattn import parse as _parse
from ._dattn import plan_ring as _plan_ring
from .builder import (Branch, Pattern, block_mask, branch, dense, dilated, dilated_blocks,
                      global_tokens, hierarchical, random_blocks, spec, window)

__all__ = [
    "ArgumentError", "Branch", "Error", "Pattern", "Spec", "SpecError", "block_mask", "branch",
    "dense", "device_count", "dilated", "dilated_blocks", "global_tokens", "hierarchical",
    "load", "nvrtc_version", "parse", "plan_ring", "random_blocks", "spec", "window",
    "attention", "block_mask_tensors", "precompile",
]



def _nvidia_wheel_dirs(paths=None):
    """The NVIDIA wheels' library folders under `paths` (default sys.path):
    CUDA 13's nvidia/cu13/lib, CUDA 12's NVRTC (nvidia/cuda_nvrtc/lib, for
    GPUs before sm_75) and NCCL's nvidia/nccl/lib, where they exist."""
    found = []
    for base in sys.path if paths is None else paths:
        for sub in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/nccl/lib"):
            folder = os.path.join(base or os.curdir, sub)
            if os.path.isdir(folder) and folder not in found:
                found.append(folder)
    return found


# NVRTC and NCCL load on first use: copies the process already has (torch's)
# first, then these folders, then CUDA_HOME and the system's. A pip-only
# machine, without a CUDA toolkit, then finds the wheels torch came with.
_dattn.add_library_dirs(_nvidia_wheel_dirs())


if importlib.util.find_spec("torch") is not None:
    # The ops register with torch.library on import; importing them here
    # keeps dattn.attention free of imports when torch.compile traces it.
    from .ops import attention, block_mask_tensors, precompile
else:

    def attention(q, k, v, spec):
        """Attention of `spec` over CUDA tensors (needs PyTorch: dattn.ops)."""
        raise ImportError("dattn.attention needs PyTorch, which is not installed")

    def precompile(spec, device=None, backward=True):
        """Compiles and loads `spec`'s kernels now (needs PyTorch: dattn.ops)."""
        raise ImportError("dattn.precompile needs PyTorch, which is not installed")

    def block_mask_tensors(kept):
        """A run-time block mask's BSR tensors (needs PyTorch: dattn.ops)."""
        raise ImportError("dattn.block_mask_tensors needs PyTorch, which is not installed")


def parse(text, filename="<string>"):
    """The attentions of spec text, as a list of Spec; raises SpecError."""
    return _parse(text, filename)


def plan_ring(spec, seq, ranks=0):
    """What each rank of a ring receives from each peer at sequence length
    ``seq`` (``ranks`` = 0: the spec's ring), as a dict (see docs/ring.md)."""
    import json

    return json.loads(_plan_ring(spec, seq, ranks))
