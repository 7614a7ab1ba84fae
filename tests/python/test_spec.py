"""The dattn Python package without a GPU: specs from text, files and the
builder, their diagnostics, and the ring plan."""
import os

import pytest

import dattn

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def test_parse_and_canonical_round_trip():
    s = dattn.parse("attention a { heads = 4 head_dim = 64 dtype = fp16 "
                    "branch { dilated(segment = 128, dilation = 2, offset = head) } }")[0]
    assert (s.name, s.heads, s.kv_heads, s.head_dim, s.dtype) == ("a", 4, 4, 64, "fp16")
    assert s.scale == pytest.approx(1 / 8)
    again = dattn.parse(s.canonical())[0]
    assert again == s and hash(again) == hash(s)


def test_one_line_spec_text_is_the_same_spec():
    # The torch ops carry spec text on one line (torch.compile writes it into
    # Python source): comments go, line breaks become spaces.
    from dattn.spec_text import one_line

    for path in sorted(os.listdir(EXAMPLES)):
        if not path.endswith(".dattn"):
            continue
        with open(os.path.join(EXAMPLES, path)) as f:
            text = f.read()
        line = one_line(text)
        assert "\n" not in line and "#" not in line
        assert dattn.parse(line) == dattn.parse(text), path
    assert one_line("attention a { # a comment\n heads = 4 // another\n}") == \
        "attention a { heads = 4 }"


def test_diagnostics_carry_file_line_col():
    with pytest.raises(dattn.SpecError) as e:
        dattn.parse("attention a {\n  heads = 4\n  head_dim = 64\n"
                    "  branch { dilated(segment = 128, dilaton = 2) }\n}\n", "bad.dattn")
    message = str(e.value)
    assert "bad.dattn:4:" in message
    assert "dilation" in message  # the did-you-mean
    assert isinstance(e.value, ValueError)


def test_load_every_example():
    for name in sorted(os.listdir(EXAMPLES)):
        if name.endswith(".dattn"):
            specs = dattn.load(os.path.join(EXAMPLES, name))
            assert specs and all(isinstance(s, dattn.Spec) for s in specs)
    with pytest.raises(dattn.SpecError):
        dattn.load(os.path.join(EXAMPLES, "no_such_file.dattn"))


def test_spec_parse_and_load_give_one_attention():
    text = ("attention a { heads = 4 head_dim = 64 branch { dense } }\n"
            "attention b { heads = 8 head_dim = 64 branch { dense } }\n")
    assert dattn.Spec.parse(text, name="b").heads == 8
    with pytest.raises(dattn.SpecError, match=r"2 attentions \(a, b\): pass name="):
        dattn.Spec.parse(text)
    with pytest.raises(dattn.SpecError, match=r"no attention named 'c' \(it defines: a, b\)"):
        dattn.Spec.parse(text, name="c")
    with pytest.raises(dattn.SpecError, match=r"x.dattn:1:"):
        dattn.Spec.parse("attention {", filename="x.dattn")
    path = os.path.join(EXAMPLES, "dense_ring.dattn")
    assert dattn.Spec.load(path) == dattn.load(path)[0]
    multiscale = dattn.Spec.load(os.path.join(EXAMPLES, "block_patterns.dattn"), name="multiscale")
    assert multiscale.name == "multiscale"
    with pytest.raises(dattn.SpecError, match="is a directory"):
        dattn.Spec.load(EXAMPLES)


def test_nvidia_wheel_folders_are_searched(tmp_path):
    # The wheels' layouts (CUDA 13: nvidia/cu13/lib; CUDA 12's NVRTC and
    # NCCL: their own folders); a site folder without them adds nothing.
    for sub in ("nvidia/cu13/lib", "nvidia/nccl/lib"):
        (tmp_path / "site" / sub).mkdir(parents=True)
    (tmp_path / "bare").mkdir()
    found = dattn._nvidia_wheel_dirs([str(tmp_path / "site"), str(tmp_path / "bare")])
    assert found == [str(tmp_path / "site" / "nvidia/cu13/lib"),
                     str(tmp_path / "site" / "nvidia/nccl/lib")]
    before = dattn._dattn.library_dirs()
    dattn._dattn.add_library_dirs(found + found[:1])  # repeats are kept once
    assert dattn._dattn.library_dirs() == before + [d for d in found if d not in before]
    # What the package found on import is there too.
    assert set(dattn._nvidia_wheel_dirs()) <= set(dattn._dattn.library_dirs())


def test_builder_matches_the_language():
    built = dattn.spec(
        heads=12, head_dim=128, dtype="bf16", name="longnet",
        branches=[dattn.branch(dattn.dilated(2048, 1, offset=0), heads=range(0, 4)),
                  dattn.branch(dattn.dilated(4096, 2, offset=1), heads=range(4, 8)),
                  dattn.branch(dattn.dilated(8192, 4, offset=2), heads=range(8, 12))])
    written = dattn.load(os.path.join(EXAMPLES, "longnet_head_partitioned.dattn"))[0]
    assert built.canonical().replace("longnet", written.name, 1) == written.canonical()
    union = dattn.spec(heads=2, head_dim=64, causal=True, ring=2, kv_heads=1,
                       branches=[dattn.window(256, 0) | dattn.global_tokens(16),
                                 dattn.random_blocks(64, 0.1, seed=3) | dattn.dense()])
    assert union.causal and union.ring == 2 and union.kv_heads == 1
    assert union.num_branches == 2
    with pytest.raises(dattn.SpecError):  # the language's rules apply to built specs too
        dattn.spec(heads=2, head_dim=64, branches=[dattn.dilated(128, 0)])
    with pytest.raises(TypeError):
        dattn.branch("window(left = 1)")


def test_ring_plan():
    s = dattn.load(os.path.join(EXAMPLES, "causal_ring.dattn"))[0]
    plan = dattn.plan_ring(s, 65536)
    assert plan["world_size"] == 4
    assert len(plan["ranks"]) == 4
    assert plan["total_bytes_forward"] == sum(r["bytes_forward"] for r in plan["ranks"])
    # the window's halo; the global tokens and the dilated member (its own
    # strided branch: dattn-split-unions) gathered
    assert [b["primitive"] for b in plan["branches"]] == ["halo", "gather", "gather"]
    assert plan["ranks"][0]["rows_received"] == 0  # causal: rank 0 needs nobody
    zigzag = dattn.spec(heads=1, head_dim=64, causal=True, ring=2, ring_layout="zigzag",
                        branches=[dattn.dense()])
    z = dattn.plan_ring(zigzag, 400)
    assert z["layout"] == "zigzag"
    assert z["ranks"][0]["rows"] == [[0, 100], [300, 400]]


def test_machine_queries_do_not_need_a_gpu():
    assert dattn.device_count() >= 0
    try:
        assert dattn.nvrtc_version().count(".") == 1
    except dattn.Error as e:  # no NVRTC: the error says what was searched
        assert "nvrtc" in str(e).lower()


def test_dense_masks_follow_the_semantics():
    # The membership masks the torch tests build their reference from.
    import numpy as np

    from dattn import _dattn

    s = dattn.parse("attention a { heads = 2 head_dim = 32 causal = true "
                    "branch { window(left = 2, right = 0) } "
                    "branch heads 1 { dilated(segment = 4, dilation = 2, offset = 1) } }")[0]
    m = np.frombuffer(_dattn.dense_masks(s, 8), dtype=np.uint8).reshape(2, 2, 8, 8)
    for i in range(8):
        for j in range(8):
            assert m[0, 0, i, j] == m[0, 1, i, j] == (i - 2 <= j <= i)
            # branch 1 holds head 1 only; causal; rows and keys j = 1 (mod 2)
            # of the same segment of 4
            assert m[1, 0, i, j] == 0
            assert m[1, 1, i, j] == (i % 2 == 1 and j % 2 == 1 and i // 4 == j // 4 and j <= i)
    masked = dattn.parse("attention b { heads = 1 head_dim = 32 "
                         "branch { block_mask(block = 16) } }")[0]
    with pytest.raises(dattn.ArgumentError, match="block_mask"):
        _dattn.dense_masks(masked, 32)
