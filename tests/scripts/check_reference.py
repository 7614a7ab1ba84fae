#!/usr/bin/env python3
"""An independent implementation of docs/semantics.md in NumPy,
forward and gradients, checked against `dattn run --device cpu` (and
`--backward`) on every example.

It shares no code with dattn: it reads the canonical spec that `dattn check`
prints, builds each branch's N x N membership mask from the pattern table
(vectorized, no tiles), computes each branch's softmax in float64 and merges
branches by log-sum-exp over the multiset. The random-block hash is
re-implemented here from its definition in docs/spec-language.md.

Usage: check_reference.py --dattn PATH/TO/dattn --examples DIR [--tmp DIR]
Prints one line per attention and a closing 'N passed, N failed' line;
exits 1 if any attention disagrees.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

M64 = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def block_hash(seed, head, qb, kb):
    z = mix64((seed + 0x9E3779B97F4A7C15 * (head + 1)) & M64)
    z = mix64(z ^ (((qb << 32) | kb) & M64))
    return z >> 32


# --------------------------------------------------------------------------
# Canonical spec reader (the format `dattn check` prints)
# --------------------------------------------------------------------------

def parse_args_text(text):
    args = {}
    for m in re.finditer(r"(\w+) = (\[[^\]]*\]|[^,)]+)", text):
        key, val = m.group(1), m.group(2).strip()
        if val.startswith("["):
            args[key] = [int(x) for x in val[1:-1].split(",") if x.strip()]
        elif val in ("inf", "head"):
            args[key] = val
        elif re.fullmatch(r"-?\d+", val):
            args[key] = int(val)
        else:
            args[key] = float(val)
    return args


def parse_heads(text):
    heads = []
    for part in text.split(","):
        part = part.strip()
        if ".." in part:
            a, b = part.split("..")
            heads.extend(range(int(a), int(b) + 1))
        else:
            heads.append(int(part))
    return heads


def read_canonical(text):
    specs, spec, branch = [], None, None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"attention (\w+) \{", line)
        if m:
            spec = {"name": m.group(1), "branches": [], "scale": None, "causal": False}
            specs.append(spec)
            continue
        m = re.match(r"branch heads (.*) \{", line)
        if m:
            branch = {"heads": parse_heads(m.group(1)), "terms": []}
            spec["branches"].append(branch)
            continue
        if line == "}":
            branch = None
            continue
        if branch is not None:
            line = line.lstrip("| ").strip()
            m = re.match(r"(\w+)(?:\((.*)\))?$", line)
            branch["terms"].append((m.group(1), parse_args_text(m.group(2) or "")))
            continue
        m = re.match(r"(\w+) = (.*)", line)
        if m:
            key, val = m.group(1), m.group(2)
            if key in ("heads", "kv_heads", "head_dim", "ring"):
                spec[key] = int(val)
            elif key == "scale":
                spec[key] = float(val)
            elif key == "causal":
                spec[key] = val == "true"
            else:
                spec[key] = val
    return specs


# --------------------------------------------------------------------------
# Key sets, straight from the pattern table
# --------------------------------------------------------------------------

def term_mask(name, a, h, n, block_mask):
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    if name == "dilated":
        r = a["dilation"]
        o = h % r if a["offset"] == "head" else a["offset"]
        m = (i % r == o) & (j % r == o)
        if a["segment"] != "inf":
            m &= (i // a["segment"]) == (j // a["segment"])
        return m
    if name == "window":
        m = np.ones((n, n), dtype=bool)
        if a["left"] != "inf":
            m &= j >= i - a["left"]
        if a["right"] != "inf":
            m &= j <= i + a["right"]
        return m
    if name == "global":
        return (j < a["tokens"]) | (i < a["tokens"])
    if name == "dense":
        return np.ones((n, n), dtype=bool)
    blk = a["block"]
    nb = (n + blk - 1) // blk
    if name == "random":
        keep = int(round(a["density"] * 2.0**32))
        kept = np.array([[block_hash(a["seed"], h, I, J) < keep for J in range(nb)]
                         for I in range(nb)])
    elif name == "dilated_blocks":
        d = np.arange(nb)[None, :] - np.arange(nb)[:, None]
        kept = d == 0
        for r in a["rates"]:
            kept |= (d == r) | (d == -r)
    elif name == "hierarchical":
        I = np.arange(nb)[:, None]
        J = np.arange(nb)[None, :]
        kept = np.zeros((nb, nb), dtype=bool)
        for lvl in range(a["levels"]):
            g = 1 << lvl
            kept |= (J % g == 0) & (np.abs(I // g - J // g) <= 1)
    elif name == "block_mask":
        kept = block_mask.astype(bool)
    else:
        raise ValueError("unknown pattern " + name)
    return np.repeat(np.repeat(kept, blk, axis=0), blk, axis=1)[:n, :n]


def branch_mask(spec, br, h, n, block_mask):
    """S_b(h, i) for every row: the union of the branch's terms, causal applied."""
    m = np.zeros((n, n), dtype=bool)
    for name, a in br["terms"]:
        m |= term_mask(name, a, h, n, block_mask)
    if spec["causal"]:
        m &= np.tril(np.ones((n, n), dtype=bool))
    return m


def attention(spec, q, k, v, block_mask):
    b_, n, hq, d = q.shape
    scale = spec["scale"] if spec["scale"] is not None else 1.0 / np.sqrt(d)
    group = hq // spec["kv_heads"]
    out = np.zeros((b_, n, hq, d))
    lse = np.full((b_, hq, n), -np.inf)
    for h in range(hq):
        qh = q[:, :, h, :].astype(np.float64)
        kh = k[:, :, h // group, :].astype(np.float64)
        vh = v[:, :, h // group, :].astype(np.float64)
        s = np.einsum("bid,bjd->bij", qh, kh) * scale
        lses, outs = [], []
        for br in spec["branches"]:
            if h not in br["heads"]:
                continue
            m = branch_mask(spec, br, h, n, block_mask)
            sb = np.where(m[None], s, -np.inf)
            mx = np.max(sb, axis=-1, keepdims=True)
            mx = np.where(np.isfinite(mx), mx, 0.0)
            p = np.exp(sb - mx)
            total = p.sum(-1)
            with np.errstate(divide="ignore"):
                lses.append(np.log(total) + mx[..., 0])
            outs.append(np.einsum("bij,bjd->bid", p, vh) /
                        np.where(total > 0, total, 1.0)[..., None])
        if not lses:
            continue
        L = np.stack(lses)  # [branches, b, n]
        Lmax = np.max(L, axis=0)
        safe = np.where(np.isfinite(Lmax), Lmax, 0.0)
        w = np.exp(L - safe)  # exp(-inf) = 0 for empty branches
        tot = w.sum(0)
        with np.errstate(divide="ignore"):
            lse[:, h, :] = np.where(tot > 0, safe + np.log(np.where(tot > 0, tot, 1.0)), -np.inf)
        o = sum(w[t][..., None] * outs[t] for t in range(len(outs)))
        out[:, :, h, :] = o / np.where(tot > 0, tot, 1.0)[..., None]
    return out, lse


def gradients(spec, q, k, v, dout, block_mask):
    """dq, dk, dv of sum(dout * O): the multiset union is one softmax in
    which key j weighs as often as branches reach it."""
    b_, n, hq, d = q.shape
    scale = spec["scale"] if spec["scale"] is not None else 1.0 / np.sqrt(d)
    group = hq // spec["kv_heads"]
    dq = np.zeros(q.shape)
    dk = np.zeros(k.shape)
    dv = np.zeros(v.shape)
    for h in range(hq):
        mult = np.zeros((n, n))
        for br in spec["branches"]:
            if h in br["heads"]:
                mult += branch_mask(spec, br, h, n, block_mask)
        qh = q[:, :, h, :].astype(np.float64)
        kh = k[:, :, h // group, :].astype(np.float64)
        vh = v[:, :, h // group, :].astype(np.float64)
        doh = dout[:, :, h, :].astype(np.float64)
        s = np.einsum("bid,bjd->bij", qh, kh) * scale
        s = np.where(mult[None] > 0, s, -np.inf)
        mx = np.max(s, axis=-1, keepdims=True)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        w = mult[None] * np.exp(s - mx)
        tot = w.sum(-1, keepdims=True)
        p = w / np.where(tot > 0, tot, 1.0)
        o = np.einsum("bij,bjd->bid", p, vh)
        dp = np.einsum("bid,bjd->bij", doh, vh)
        delta = (doh * o).sum(-1, keepdims=True)
        ds = p * (dp - delta)
        dq[:, :, h, :] = scale * np.einsum("bij,bjd->bid", ds, kh)
        dk[:, :, h // group, :] += scale * np.einsum("bij,bid->bjd", ds, qh)
        dv[:, :, h // group, :] += np.einsum("bij,bid->bjd", p, doh)
    return dq, dk, dv


def rel(got, want):
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


# --------------------------------------------------------------------------

def check_one(dattn, path, spec, tmp, rng):
    # Divisible by every example's ring; ragged for every block size; longer
    # than the examples' windows so that no pattern degenerates to dense.
    n = 1000
    batch = 2
    hq, hkv, d = spec["heads"], spec["kv_heads"], spec["head_dim"]
    q = rng.standard_normal((batch, n, hq, d)).astype(np.float32)
    k = rng.standard_normal((batch, n, hkv, d)).astype(np.float32)
    v = rng.standard_normal((batch, n, hkv, d)).astype(np.float32)
    files = {x: os.path.join(tmp, spec["name"] + "_" + x + ".npy") for x in
             ("q", "k", "v", "o", "lse", "mask")}
    np.save(files["q"], q)
    np.save(files["k"], k)
    np.save(files["v"], v)
    cmd = [dattn, "run", path, "--name", spec["name"], "--seq", str(n), "--batch", str(batch),
           "--device", "cpu", "--q", files["q"], "--k", files["k"], "--v", files["v"],
           "--out", files["o"], "--lse", files["lse"]]
    block_mask = None
    for br in spec["branches"]:
        for name, a in br["terms"]:
            if name == "block_mask":
                nb = (n + a["block"] - 1) // a["block"]
                block_mask = (rng.random((nb, nb)) < 0.5).astype(np.float32)
                np.save(files["mask"], block_mask)
                cmd += ["--block-mask", files["mask"]]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    got_o, got_lse = np.load(files["o"]), np.load(files["lse"])
    want_o, want_lse = attention(spec, q, k, v, block_mask)
    rel_o = rel(got_o, want_o)
    same_inf = np.array_equal(np.isneginf(got_lse), np.isneginf(want_lse))
    fin = np.isfinite(want_lse)
    lse_err = float(np.max(np.abs(got_lse[fin] - want_lse[fin]))) if fin.any() else 0.0
    ok = (rel_o < 1e-6 and same_inf and lse_err < 1e-5 and not np.isnan(got_o).any()
          and not np.isnan(got_lse).any())
    empty = int((~fin).sum())
    print(f"{'PASS' if ok else 'FAIL'} {os.path.basename(path)}:{spec['name']}: N={n} "
          f"batch={batch} rel. error of O {rel_o:.2e}, max |LSE error| {lse_err:.2e}, "
          f"empty rows {empty}{'' if same_inf else ', empty rows differ'}")
    return ok and check_backward(dattn, path, spec, tmp, rng)


def check_backward(dattn, path, spec, tmp, rng):
    n, batch = 240, 2  # O(N^2) in both implementations: kept small
    hq, hkv, d = spec["heads"], spec["kv_heads"], spec["head_dim"]
    arrays = {"q": rng.standard_normal((batch, n, hq, d)),
              "k": rng.standard_normal((batch, n, hkv, d)),
              "v": rng.standard_normal((batch, n, hkv, d)),
              "dout": rng.standard_normal((batch, n, hq, d))}
    files = {}
    for name, x in arrays.items():
        arrays[name] = x.astype(np.float32)
        files[name] = os.path.join(tmp, spec["name"] + "_bwd_" + name + ".npy")
        np.save(files[name], arrays[name])
    prefix = os.path.join(tmp, spec["name"] + "_grad")
    cmd = [dattn, "run", path, "--name", spec["name"], "--seq", str(n), "--batch", str(batch),
           "--device", "cpu", "--backward", "--grads", prefix]
    for name in ("q", "k", "v", "dout"):
        cmd += ["--" + name, files[name]]
    block_mask = None
    for br in spec["branches"]:
        for name, a in br["terms"]:
            if name == "block_mask":
                nb = (n + a["block"] - 1) // a["block"]
                block_mask = (rng.random((nb, nb)) < 0.5).astype(np.float32)
                np.save(prefix + "_mask.npy", block_mask)
                cmd += ["--block-mask", prefix + "_mask.npy"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    want = gradients(spec, arrays["q"], arrays["k"], arrays["v"], arrays["dout"], block_mask)
    errors = [rel(np.load(prefix + "_" + g + ".npy"), w) for g, w in zip(("dq", "dk", "dv"), want)]
    ok = all(e < 1e-5 for e in errors)
    print(f"{'PASS' if ok else 'FAIL'} {os.path.basename(path)}:{spec['name']}: backward N={n} "
          f"batch={batch} rel. errors dq {errors[0]:.2e}, dk {errors[1]:.2e}, dv {errors[2]:.2e}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dattn", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--tmp")
    args = ap.parse_args()
    rng = np.random.default_rng(20261122)
    passed = failed = 0
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for fname in sorted(os.listdir(args.examples)):
            if not fname.endswith(".dattn"):
                continue
            path = os.path.join(args.examples, fname)
            text = subprocess.run([args.dattn, "check", path], check=True,
                                  capture_output=True, text=True).stdout
            for spec in read_canonical(text):
                if check_one(args.dattn, path, spec, tmp, rng):
                    passed += 1
                else:
                    failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
