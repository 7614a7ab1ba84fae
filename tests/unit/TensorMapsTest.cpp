// The TMA maps of the forward kernels that load K and V through TMA
// (runtime/TensorMaps.h), without a GPU: dimensions, byte strides and boxes
// for the caller's layout and the branch's dilation, the rule the kernel
// shares (tmaBoxRows), and the dilations the families decline.
#include "TensorMaps.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/kernels.h"
#include "dattn/params.cuh"

#include <gtest/gtest.h>

namespace dattn {
namespace {

TEST(TensorMaps, BoxesCoverATileWithinTheTmaLimits) {
  // Tiles of 64 and 128 rows are whole boxes; a box spans at most 256
  // sequence rows.
  for (int tile : {64, 128})
    for (int r = 1; r <= fwd::kTmaMaxStride; ++r) {
      const int rows = fwd::tmaBoxRows(r, tile);
      EXPECT_EQ(tile % rows, 0) << r;
      EXPECT_LE(rows * r, 256) << r;
    }
  EXPECT_EQ(fwd::tmaBoxRows(2, 64), 64);
  EXPECT_EQ(fwd::tmaBoxRows(2, 128), 128);
  EXPECT_EQ(fwd::tmaBoxRows(5, 128), 32);
}

TEST(TensorMaps, ShapeFollowsTheLayoutAndTheDilation) {
  // [B, N, Hk, D] = [2, 1000, 2, 128] bf16, contiguous: rows 512 bytes.
  const Layout l{1000 * 2 * 128, 2 * 128, 128};
  rt::RowMapShape s = rt::rowMapShape(l, 2, 1000, 2, 128, 2, 3, 128);
  EXPECT_EQ(s.dims[0], 128u);
  EXPECT_EQ(s.dims[1], 2u);
  EXPECT_EQ(s.dims[2], 1000u);
  EXPECT_EQ(s.dims[3], 2u);
  EXPECT_EQ(s.strides[0], 256u); // heads, rows, batches: increasing
  EXPECT_EQ(s.strides[1], 512u);
  EXPECT_EQ(s.strides[2], 1000u * 512);
  EXPECT_EQ(s.box[0], 64u); // 128 bytes: the swizzle span
  EXPECT_EQ(s.box[1], 1u);
  EXPECT_EQ(s.box[2], 64u * 3); // 64 rows, 3 apart
  EXPECT_EQ(s.box[3], 1u);
  EXPECT_EQ(s.elementStrides[2], 3u);
  EXPECT_EQ(s.elementStrides[0] * s.elementStrides[1] * s.elementStrides[3], 1u);
  s = rt::rowMapShape(l, 2, 1000, 2, 128, 2, 1, 128);
  EXPECT_EQ(s.box[2], 128u);
  s = rt::rowMapShape(l, 2, 1000, 2, 128, 2, 8, 128);
  EXPECT_EQ(s.box[2], 256u);
  s = rt::rowMapShape(l, 2, 1000, 2, 128, 2, 2, 64); // the dK/dV kernel's 64-row query tiles
  EXPECT_EQ(s.box[2], 128u);
  // A packed QKV view (rows 3 x wider) keeps the caller's strides; an
  // extent of 1 gets one the TMA accepts whatever the caller's was.
  const Layout packed{1000 * 3 * 2 * 128, 3 * 2 * 128, 128};
  s = rt::rowMapShape(packed, 1, 1000, 1, 128, 2, 2, 128);
  EXPECT_EQ(s.strides[0], 256u);
  EXPECT_EQ(s.strides[1], 3u * 512);
  EXPECT_EQ(s.strides[2], 1000u * 3 * 512);
  EXPECT_THROW(rt::rowMapShape(l, 2, 1000, 2, 128, 2, 9, 128), Error);
  EXPECT_THROW(rt::rowMapShape(l, 2, 1000, 2, 128, 2, 0, 128), Error);
}

TEST(TensorMaps, TheTmaFamilyDeclinesDilationsPastTheBoxStep) {
  ParseResult r = parseSpec("attention t { heads = 2 head_dim = 128 dtype = bf16 "
                            "branch heads 0..0 { dilated(segment = 2048, dilation = 8) } "
                            "branch heads 1..1 { dilated(segment = 4096, dilation = 16) } }",
                            "test");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  const AttentionPlan plan = planAttention(r.file.attentions.at(0));
  const KernelFamily &tma = familyNamed("sm90_wgmma_tma_forward");
  const Target t = Target::parse("sm_90a");
  EXPECT_EQ(tma.unsupported(plan, plan.branches[0], t), "");
  EXPECT_NE(tma.unsupported(plan, plan.branches[1], t).find("at most 8 rows"), std::string::npos)
      << tma.unsupported(plan, plan.branches[1], t);
  EXPECT_EQ(tma.tensorMaps(), (std::vector<std::string>{"k", "v"}));
  EXPECT_TRUE(familyNamed("sm90_wgmma_pipelined_forward").tensorMaps().empty());
  EXPECT_NE(tma.unsupported(plan, plan.branches[0], Target::parse("sm_90")), "");
}

} // namespace
} // namespace dattn
