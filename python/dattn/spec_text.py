"""Spec text as the torch ops carry it: on one line.

``torch.compile`` writes an op's string arguments into the Python source it
generates (inductor's wrapper code); a string with line breaks there fails
to import with an IndentationError. The DSL reads line breaks as spaces, so
one line with the comments dropped is the same spec. Pure Python: it runs
inside a compiled function without breaking the graph.
"""


def one_line(text):
    """`text` (spec text) with comments dropped and whitespace runs joined
    into single spaces: the same attentions on one line."""
    kept = []
    for line in text.splitlines():
        # The DSL's comments run from '#' or '//' to the end of the line; it
        # has no string literals, so neither can occur inside a token.
        line = line.split("#", 1)[0].split("//", 1)[0]
        kept.extend(line.split())
    return " ".join(kept)
