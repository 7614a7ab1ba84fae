"""The spec builder: Python values that print as spec text.

Each pattern function returns a Pattern; ``p | q`` is their union inside
one branch. A branch is a pattern (all heads) or ``branch(pattern,
heads=...)``. ``spec(...)`` prints the attention and parses it with the
C++ front end, so the builder cannot produce a spec the language rejects.
"""

INF = "inf"


def _extent(v):
    return INF if v is None or v == float("inf") else str(int(v))


class Pattern:
    """One pattern term, or a union of terms (``|``)."""

    def __init__(self, *terms):
        self.terms = list(terms)

    def __or__(self, other):
        if not isinstance(other, Pattern):
            return NotImplemented
        return Pattern(*(self.terms + other.terms))

    def text(self):
        return " | ".join(self.terms)

    def __repr__(self):
        return "Pattern(" + self.text() + ")"


def dilated(segment, dilation=1, offset="head"):
    """LongNet's dilated attention: segments of ``segment`` rows (None: the
    whole sequence), rows i = offset (mod dilation); offset "head" means
    head mod dilation."""
    off = "head" if offset == "head" else str(int(offset))
    return Pattern("dilated(segment = %s, dilation = %d, offset = %s)"
                   % (_extent(segment), int(dilation), off))


def window(left, right=0):
    """Keys i - left <= j <= i + right (None: unbounded)."""
    return Pattern("window(left = %s, right = %s)" % (_extent(left), _extent(right)))


def global_tokens(tokens):
    """The first ``tokens`` rows attend to and are attended by every row."""
    return Pattern("global(tokens = %d)" % int(tokens))


def dense():
    return Pattern("dense")


def random_blocks(block, density, seed=0):
    """Block pairs kept by the language's hash of (seed, head, I, J)."""
    return Pattern("random(block = %d, density = %r, seed = %d)"
                   % (int(block), float(density), int(seed)))


def dilated_blocks(block, rates):
    return Pattern("dilated_blocks(block = %d, rates = [%s])"
                   % (int(block), ", ".join(str(int(r)) for r in rates)))


def hierarchical(block, levels):
    return Pattern("hierarchical(block = %d, levels = %d)" % (int(block), int(levels)))


def block_mask(block):
    """A BSR block mask given at run time."""
    return Pattern("block_mask(block = %d)" % int(block))


class Branch:
    def __init__(self, pattern, heads=None):
        if not isinstance(pattern, Pattern):
            raise TypeError("a branch takes a Pattern, got %r" % (pattern,))
        self.pattern = pattern
        self.heads = None if heads is None else sorted(set(int(h) for h in heads))

    def text(self):
        heads = ""
        if self.heads is not None:
            if not self.heads:
                raise ValueError("a branch needs at least one head")
            heads = " heads " + ", ".join(str(h) for h in self.heads)
        return "branch%s { %s }" % (heads, self.pattern.text())


def head_groups(heads, groups):
    """The dilated-attention ports' split of `heads` into `groups` contiguous
    ranges, the first heads % groups of them one head larger."""
    sizes = [heads // groups + (1 if i < heads % groups else 0) for i in range(groups)]
    start = 0
    for size in sizes:
        yield range(start, start + size)
        start += size


def branch(pattern, heads=None):
    """A branch over ``heads`` (an iterable of head indices; None: all)."""
    return Branch(pattern, heads)


def spec(heads, head_dim, branches, dtype="bf16", kv_heads=None, causal=False, scale=None,
         ring=1, ring_layout=None, precision=None, name="attention"):
    """An attention spec from Python values; returns a dattn.Spec."""
    from . import parse

    lines = ["attention %s {" % name, "  heads = %d" % int(heads)]
    if kv_heads is not None:
        lines.append("  kv_heads = %d" % int(kv_heads))
    lines += ["  head_dim = %d" % int(head_dim), "  dtype = %s" % dtype]
    if precision is not None:
        lines.append("  precision = %s" % precision)
    if causal:
        lines.append("  causal = true")
    if scale is not None:
        lines.append("  scale = %r" % float(scale))
    if ring != 1:
        lines.append("  ring = %d" % int(ring))
    if ring_layout is not None:
        lines.append("  ring_layout = %s" % ring_layout)
    for b in branches:
        lines.append("  " + (b if isinstance(b, Branch) else Branch(b)).text())
    lines.append("}")
    return parse("\n".join(lines) + "\n", "<dattn.spec>")[0]
