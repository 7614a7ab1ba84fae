// How a tensor-core dK/dV kernel's walk over query tiles is split across
// CTAs (runtime/Launch.h): long key columns split, bounded ones and
// order-sensitive modules do not, and the chunks' bound covers the walk
// the kernel computes (unionQueryTiles), so no chunk is left to the last.
#include "Launch.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace dattn {
namespace {

AttentionPlan planOf(const std::string &branches, bool causal = false) {
  ParseResult r = parseSpec("attention t { heads = 2 head_dim = 64 dtype = bf16 " +
                                std::string(causal ? "causal = true " : "") + branches + " }",
                            "test");
  EXPECT_TRUE(r.ok()) << r.formatDiagnostics();
  return planAttention(r.file.attentions.at(0));
}

KernelInfo dkvKernel(int bm, int bn) {
  KernelInfo k;
  k.role = KernelRole::DkvPass;
  k.path = KernelPath::Mma;
  k.config.blockM = bm;
  k.config.blockN = bn;
  k.rowsPerCta = bn;
  return k;
}

TEST(QuerySplit, LongColumnsSplitBoundedOnesDoNot) {
  const KernelInfo k = dkvKernel(64, 64);
  const int64_t n = 16384; // 256 query tiles
  const AttentionPlan global = planOf("branch { window(left = 64, right = 0) | global(tokens = 16) }");
  const rt::QuerySplit s = rt::querySplit(k, global.branches[0], n, 1, true);
  EXPECT_EQ(s.chunks, 17); // 257 tiles (a span of N rows meets N / 64 + 1 tiles)
  EXPECT_EQ(s.tiles, 16);
  // Order-sensitive (deterministic) or direct-write modules never split.
  EXPECT_EQ(rt::querySplit(k, global.branches[0], n, 1, false).chunks, 1);
  // Neither does a bounded window, nor the SIMT path.
  const AttentionPlan window = planOf("branch { window(left = 200, right = 30) }");
  EXPECT_EQ(rt::querySplit(k, window.branches[0], n, 1, true).chunks, 1);
  KernelInfo simt = k;
  simt.path = KernelPath::Simt;
  EXPECT_EQ(rt::querySplit(simt, global.branches[0], n, 1, true).chunks, 1);
  // The grid's z (batch x chunks) stays within 65535.
  const rt::QuerySplit big = rt::querySplit(k, global.branches[0], 1 << 22, 30000, true);
  EXPECT_EQ(big.chunks, 2);
  EXPECT_GE(big.chunks * big.tiles, (1 << 22) / 64);
  // A causal unbounded dilated segment (strided: 8192 compact rows).
  const AttentionPlan dilated =
      planOf("branch { dilated(segment = inf, dilation = 2, offset = head) }", true);
  const rt::QuerySplit d = rt::querySplit(k, dilated.branches[0], n, 1, true);
  EXPECT_EQ(d.chunks, 8);
  EXPECT_EQ(d.tiles, 16);
}

TEST(QuerySplit, ChunksCoverEveryKeyTilesWalk) {
  // chunks x tiles bounds every key tile's walk [t0, t1) of blocks branches
  // (the kernel runs the last chunk to t1 regardless: this is balance).
  const char *unions[] = {
      "window(left = 900, right = 377)",
      "window(left = 40, right = 0) | dilated(segment = 1500, dilation = 3, offset = head)",
      "dilated(segment = 1333, dilation = 2) | window(left = 8, right = 8)",
      "global(tokens = 9) | window(left = 10, right = 10)",
  };
  int splits = 0;
  for (const char *u : unions)
    for (bool causal : {false, true})
      for (int bm : {32, 64, 128})
        for (int bn : {32, 64, 128}) {
          const AttentionPlan p = planOf(std::string("branch { ") + u + " }", causal);
          for (const BranchPlan &b : p.branches) {
            if (b.kind != BranchKind::Blocks)
              continue;
            for (int64_t n : {1000, 6000}) {
              const rt::QuerySplit s = rt::querySplit(dkvKernel(bm, bn), b, n, 1, true);
              const int64_t cover = s.chunks == 1 ? INT64_MAX : s.chunks * s.tiles;
              splits += s.chunks > 1;
              for (size_t h = 0; h < b.heads.size(); ++h) {
                std::vector<plan::Member> members;
                for (const MemberPlan &m : b.members)
                  members.push_back(m.forHead(static_cast<int>(h), b.heads[h]));
                for (int64_t j0 = 0; j0 < n; j0 += bn) {
                  plan::i64 t0, t1;
                  plan::unionQueryTiles(members.data(), static_cast<int>(members.size()),
                                        causal, j0, std::min(n, j0 + bn), n, bm, &t0, &t1);
                  ASSERT_LE(t1 - t0, cover) << u << " causal " << causal << " bm " << bm
                                            << " bn " << bn << " N " << n << " j0 " << j0;
                }
              }
            }
          }
        }
  EXPECT_GT(splits, 50); // the bound is tested where it matters
}

} // namespace
} // namespace dattn
