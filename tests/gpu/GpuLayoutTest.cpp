// Tensor descriptors on the GPU: packed QKV views, heads-major and padded
// outputs, packed gradients, forward and backward against the reference
// (O, LSE values and gradients), with every element outside the views left
// untouched; and the validation of bad arguments, each named in its error.
#include "GpuTest.h"

#include <cmath>

namespace dattn::test {
namespace {

struct LayoutCase {
  const char *dtype;
  int heads, kvHeads;
  bool causal;
  const char *branches;
};

void checkLayouts(const LayoutCase &c) {
  Runtime &rt = runtime();
  const std::string text = std::string("attention t { heads = ") + std::to_string(c.heads) +
                           " kv_heads = " + std::to_string(c.kvHeads) +
                           " head_dim = 64 dtype = " + c.dtype +
                           (c.causal ? " causal = true " : " ") + c.branches + " }";
  AttentionSpec spec = parse(text);
  auto attn = rt.compile(spec);
  const int64_t B = 2, N = 300, H = c.heads, Hk = c.kvHeads, D = 64, pad = 16;
  const DType t = spec.dtype;
  // Inputs: packed [B, N, H + 2 Hk, D] plus 16 elements of padding per row,
  // then dout heads-major [B, H, N, D].
  const int64_t rs = (H + 2 * Hk) * D + pad;
  DeviceArena in(t, B * N * rs + B * H * N * D);
  TensorDesc q = in.view(0, {B, N, H, D}, {N * rs, rs, D, 1});
  TensorDesc k = in.view(H * D, {B, N, Hk, D}, {N * rs, rs, D, 1});
  TensorDesc v = in.view((H + Hk) * D, {B, N, Hk, D}, {N * rs, rs, D, 1});
  TensorDesc dout = in.view(B * N * rs, {B, N, H, D}, {H * N * D, D, N * D, 1});
  std::vector<float> qv = in.write(q, randomVector(B * N * H * D, 1));
  std::vector<float> kv = in.write(k, randomVector(B * N * Hk * D, 2));
  std::vector<float> vv = in.write(v, randomVector(B * N * Hk * D, 3));
  std::vector<float> gv = in.write(dout, randomVector(B * N * H * D, 4));
  in.upload();
  // O heads-major with padded rows; gradients packed like the inputs.
  const int64_t os = D + pad;
  DeviceArena outArena(t, B * H * N * os);
  TensorDesc out = outArena.view(0, {B, N, H, D}, {H * N * os, os, N * os, 1});
  DeviceArena grads(t, B * N * rs);
  TensorDesc dq = grads.view(0, {B, N, H, D}, {N * rs, rs, D, 1});
  TensorDesc dk = grads.view(H * D, {B, N, Hk, D}, {N * rs, rs, D, 1});
  TensorDesc dv = grads.view((H + Hk) * D, {B, N, Hk, D}, {N * rs, rs, D, 1});
  DeviceBuffer lse(B * H * N * 4);
  const WorkspaceSizes ws = attn->workspaceSizes(B, N);
  DeviceBuffer workspace(std::max<int64_t>(16, std::max(ws.forward, ws.backward)));

  ForwardArgs f;
  f.q = q, f.k = k, f.v = v, f.out = out;
  f.lse = TensorDesc::contiguous(lse.data(), DType::F32, {B, H, N});
  f.workspace = workspace.workspace();
  outArena.poisonViews();
  lse.fill32(0x7fc00000u);
  attn->forward(f);
  synchronize("forward on strided views");
  outArena.download();
  std::vector<float> o = outArena.read(out), l(B * H * N);
  lse.download(l.data(), l.size() * 4);
  std::vector<float> ro(o.size()), rl(l.size());
  referenceForward(spec, B, N, qv.data(), kv.data(), vv.data(), nullptr, ro.data(), rl.data());
  Comparison cmp = compareWithReference(spec, B, N, o.data(), l.data(), ro.data(), rl.data());
  const double tol = toleranceFor(t);
  EXPECT_TRUE(cmp.within(tol)) << "O rel. " << cmp.relError << ", worst row " << cmp.maxRowError
                               << ", LSE " << cmp.maxLseError << ", NaN " << cmp.nans
                               << ", empty " << cmp.emptyMismatch << "\n" << text;
  EXPECT_LT(cmp.maxLseError, t == DType::F32 ? 1e-4 : 1e-2) << text;
  EXPECT_EQ(outArena.gapsChanged(), 0u) << "the forward wrote outside O's view\n" << text;

  std::vector<float> rq(qv.size()), rk(kv.size()), rv(vv.size());
  referenceBackward(spec, B, N, qv.data(), kv.data(), vv.data(), gv.data(), nullptr, rq.data(),
                    rk.data(), rv.data());
  for (bool deterministic : {false, true}) {
    BackwardArgs b;
    b.q = q, b.k = k, b.v = v, b.out = out, b.lse = f.lse, b.dout = dout;
    b.dq = dq, b.dk = dk, b.dv = dv;
    b.workspace = workspace.workspace();
    b.deterministic = deterministic;
    grads.poisonViews();
    attn->backward(b);
    synchronize("backward on strided views");
    grads.download();
    const std::string context = text + (deterministic ? " (deterministic)" : "");
    expectGradientClose("dq", grads.read(dq), rq, D, toleranceFor(t), context);
    expectGradientClose("dk", grads.read(dk), rk, D, toleranceFor(t), context);
    expectGradientClose("dv", grads.read(dv), rv, D, toleranceFor(t), context);
    EXPECT_EQ(grads.gapsChanged(), 0u) << "the backward wrote outside the gradients\n" << context;
  }
}

TEST(GpuLayouts, PackedQkvStridedOutputsAndGradients) {
  REQUIRE_GPU();
  const LayoutCase cases[] = {
      // One branch per head, no GQA: gradients written directly, rows off the
      // dilation lattice zeroed in place (strided zero pass).
      {"bf16", 4, 4, false,
       "branch heads 0..1 { dilated(segment = 64, dilation = 1) } "
       "branch heads 2..3 { dilated(segment = 128, dilation = 2, offset = 1) }"},
      {"fp16", 4, 2, true,
       "branch { dilated(segment = 64, dilation = 1) } "
       "branch { dilated(segment = 128, dilation = 2, offset = head) } "
       "branch heads 0..1 { window(left = 16, right = 0) }"},
      {"fp32", 4, 2, false, "branch { window(left = 33, right = 0) | global(tokens = 5) }"},
      {"bf16", 2, 1, false, "branch { random(block = 32, density = 0.3, seed = 5) }"},
  };
  for (const LayoutCase &c : cases)
    checkLayouts(c);
}

TEST(GpuLayouts, RejectsBadArguments) {
  REQUIRE_GPU();
  // Two branches on every head: the forward needs a workspace.
  AttentionSpec spec = parse("attention t { heads = 2 head_dim = 64 dtype = bf16 "
                             "branch { dense } branch { window(left = 4, right = 0) } }");
  auto attn = runtime().compile(spec);
  const int64_t N = 64;
  DeviceBuffer buf(1 << 20), lse(1 << 16), ws(1 << 20);
  ForwardArgs a;
  a.q = a.k = a.v = a.out = TensorDesc::contiguous(buf.data(), DType::BF16, {1, N, 2, 64});
  a.lse = TensorDesc::contiguous(lse.data(), DType::F32, {1, 2, N});
  a.workspace = ws.workspace();
  ASSERT_GT(attn->workspaceSizes(1, N).forward, 0);
  attn->forward(a); // the valid call works
  synchronize("a valid forward");
  auto expectError = [&](ForwardArgs bad, const std::string &fragment) {
    try {
      attn->forward(bad);
      ADD_FAILURE() << "accepted; expected an error containing: " << fragment;
    } catch (const ArgumentError &e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("attention 't'"), std::string::npos) << e.what();
    }
  };
  ForwardArgs b = a;
  b.q.data = static_cast<char *>(buf.data()) + 2;
  expectError(b, "q at");
  b = a;
  std::vector<char> host(1 << 20);
  b.k.data = host.data() + (16 - reinterpret_cast<uintptr_t>(host.data()) % 16) % 16;
  expectError(b, "is not GPU memory");
  b = a;
  b.v.strides[1] = 100;
  expectError(b, "v seq stride 100 must be a positive multiple of 8");
  b = a;
  b.out.strides[3] = 2;
  expectError(b, "out must be contiguous in head_dim");
  b = a;
  b.q.shape[0] = 0;
  expectError(b, "batch (q.shape[0]) must be in [1, 65535]");
  b = a;
  b.k.shape[2] = 3;
  expectError(b, "k must have shape [1, 64, 2, 64]");
  b = a;
  b.v.dtype = DType::F16;
  expectError(b, "v must be bf16");
  b = a;
  b.out.data = nullptr;
  expectError(b, "out is null");
  b = a;
  b.lse = TensorDesc::strided(lse.data(), DType::F32, {1, 2, N}, {2 * N, 1, 2});
  expectError(b, "lse must be contiguous");
  b = a;
  b.workspace.bytes = 16;
  expectError(b, "the workspace must hold");
  b = a;
  b.q.strides[1] = 1 << 14; // 64 rows of 16384 elements, 2 bytes each: past the 1 MiB buffer
  expectError(b, "past the end of its allocation");
  b = a;
  DeviceBlockMask bogus;
  bogus.rowOffsets = static_cast<const int64_t *>(buf.data());
  b.mask = bogus;
  expectError(b, "the spec has no block_mask pattern");

  // Backward: the gradients' descriptors are checked the same way.
  BackwardArgs g;
  g.q = g.k = g.v = g.out = g.dout = g.dq = g.dk = g.dv = a.q;
  g.lse = a.lse;
  g.workspace = ws.workspace();
  g.dk.shape[1] = N + 1;
  try {
    attn->backward(g);
    ADD_FAILURE() << "a wrong dk shape was accepted";
  } catch (const ArgumentError &e) {
    EXPECT_NE(std::string(e.what()).find("dk must have shape [1, 64, 2, 64]"), std::string::npos)
        << e.what();
  }
}

} // namespace
} // namespace dattn::test
