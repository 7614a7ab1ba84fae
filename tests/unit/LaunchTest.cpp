// How a tensor-core dK/dV kernel's walk over query tiles is split across
// CTAs (runtime/Launch.h): long key columns split, bounded ones and
// order-sensitive modules do not, and the chunks' bound covers the walk
// the kernel computes (unionQueryTiles), so no chunk is left to the last.
#include "BranchStreams.h"
#include "Launch.h"

#include "dattn/backward_params.cuh"
#include "dattn/compiler.h"
#include "dattn/emit.h"
#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/dsl.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <utility>
#include <vector>

namespace dattn {
namespace {

AttentionPlan planOf(const std::string &branches, bool causal = false) {
  ParseResult r = parseSpec("attention t { heads = 2 head_dim = 64 dtype = bf16 " +
                                std::string(causal ? "causal = true " : "") + branches + " }",
                            "test");
  EXPECT_TRUE(r.ok()) << r.formatDiagnostics();
  return planAttention(r.file.attentions.at(0));
}

// A fill no key grid reaches: the split decided by the walks alone.
constexpr int64_t kNoFill = int64_t(1) << 40;

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
  const int64_t n = 16384, keyTiles = n / 64; // 256 query tiles, 256 key tiles
  // Global tokens make the first key tile's column the whole sequence: only
  // it is chunked, in chunks of kTokenChunkTiles (257 tiles bound the walk).
  const AttentionPlan global = planOf("branch { window(left = 64, right = 0) | global(tokens = 16) }");
  const rt::QuerySplit s = rt::querySplit(k, global.branches[0], n, keyTiles, kNoFill, true);
  EXPECT_EQ(s.chunkedKeyCtas, 1);
  EXPECT_EQ(s.chunks, 65);
  EXPECT_EQ(s.tiles, 4);
  EXPECT_EQ(s.gridX(keyTiles), keyTiles + 64);
  // 100 tokens: two key tiles.
  const AttentionPlan tokens = planOf("branch { global(tokens = 100) }");
  EXPECT_EQ(rt::querySplit(k, tokens.branches[0], n, keyTiles, kNoFill, true).chunkedKeyCtas, 2);
  // Order-sensitive (deterministic) or direct-write modules never split.
  EXPECT_EQ(rt::querySplit(k, global.branches[0], n, keyTiles, kNoFill, false).chunks, 1);
  // Neither does a bounded window, nor the SIMT path.
  const AttentionPlan window = planOf("branch { window(left = 200, right = 30) }");
  EXPECT_EQ(rt::querySplit(k, window.branches[0], n, keyTiles, kNoFill, true).chunks, 1);
  KernelInfo simt = k;
  simt.path = KernelPath::Simt;
  EXPECT_EQ(rt::querySplit(simt, global.branches[0], n, keyTiles, kNoFill, true).chunks, 1);
  // A long window and global tokens: every key tile is chunked.
  const AttentionPlan wide = planOf("branch { window(left = 3000, right = 0) | global(tokens = 8) }");
  const rt::QuerySplit w = rt::querySplit(k, wide.branches[0], n, keyTiles, kNoFill, true);
  EXPECT_EQ(w.chunkedKeyCtas, keyTiles);
  EXPECT_EQ(w.chunks, 17);
  // A causal unbounded dilated segment (strided: 8192 compact rows, 128
  // key CTAs of 64): all of them, in chunks of 16 tiles.
  const AttentionPlan dilated =
      planOf("branch { dilated(segment = inf, dilation = 2, offset = head) }", true);
  const rt::QuerySplit d = rt::querySplit(k, dilated.branches[0], n, 128, kNoFill, true);
  EXPECT_EQ(d.chunks, 8);
  EXPECT_EQ(d.tiles, 16);
  EXPECT_EQ(d.chunkedKeyCtas, 128);
  EXPECT_EQ(d.gridX(128), 128 * 8);
}

// Chunks of every key tile only until the grid fills the GPU: each chunk
// loads K and V again and adds its dK/dV by fp32 reductions on the key
// tile's addresses. Dense at 128K on an H100 (132 SMs, 12 heads) has 12288
// key CTAs, eleven times kSplitWaves an SM: no split (the ring split each
// key tile into 128 chunks, and its backward took 1.8x one GPU's time).
TEST(QuerySplit, EveryKeyTileSplitsOnlyUntilTheGpuIsFull) {
  const int64_t fill12 = rt::keyCtasToFill(132, 12);
  EXPECT_EQ(fill12, 88);
  EXPECT_EQ(rt::keyCtasToFill(132, 1), rt::kSplitWaves * 132);
  EXPECT_EQ(rt::keyCtasToFill(0, 0), rt::kSplitWaves) << "unknown SMs and slices count as one";
  const KernelInfo k = dkvKernel(64, 128);
  const AttentionPlan dense = planOf("branch { dilated(segment = inf, dilation = 1) }");
  const BranchPlan &b = dense.branches.at(0);
  int64_t n = 131072;
  EXPECT_EQ(rt::querySplit(k, b, n, n / 128, fill12, true).chunks, 1);
  EXPECT_EQ(rt::ringQuerySplit(k, b, n, n / 64, n / 128, 1, fill12).chunks, 1);
  // Unbounded: 128 chunks of 16 tiles each.
  EXPECT_EQ(rt::querySplit(k, b, n, n / 128, kNoFill, true).chunks, 128);
  EXPECT_EQ(rt::ringQuerySplit(k, b, n, n / 64, n / 128, 1, kNoFill).chunks, 128);
  // 16 key tiles (N = 2048) of 12 heads against 88 wanted would take 6
  // chunks, but a chunk keeps at least 16 of the walk's 32 tiles.
  n = 2048;
  const rt::QuerySplit s = rt::querySplit(k, b, n, n / 128, fill12, true);
  EXPECT_EQ(s.chunks, 2) << "32 query tiles allow two chunks of 16";
  n = 16384;
  const rt::QuerySplit m = rt::querySplit(k, b, n, n / 128, rt::keyCtasToFill(132, 1), true);
  EXPECT_EQ(m.chunks, 9) << "1056 wanted of 128 key tiles";
  EXPECT_GE(m.tiles * m.chunks, n / 64) << "the chunks must cover the walk";
  EXPECT_GE(m.gridX(n / 128), rt::keyCtasToFill(132, 1));
  // Global tokens chunk only their own tiles, for balance: not capped.
  const AttentionPlan tokens = planOf("branch { window(left = 64, right = 0) | global(tokens = 16) }");
  EXPECT_EQ(rt::querySplit(dkvKernel(64, 64), tokens.branches[0], n, n / 64, 1, true).chunks, 65);
}

// DATTN_SPLIT_WAVES moves the fill for trials; a value that is not a whole
// number of CTAs an SM in [1, 1024] is an error that names the variable.
TEST(QuerySplit, SplitWavesKnob) {
  EXPECT_EQ(rt::keyCtasToFill(132, 12, 16), 176);
  EXPECT_EQ(rt::keyCtasToFill(132, 12, 0), 11) << "no waves count as one";
  ::unsetenv("DATTN_SPLIT_WAVES");
  EXPECT_EQ(env::splitWaves(), 0);
  ::setenv("DATTN_SPLIT_WAVES", "4", 1);
  EXPECT_EQ(env::splitWaves(), 4);
  for (const char *bad : {"0", "-2", "8x", "2000"}) {
    ::setenv("DATTN_SPLIT_WAVES", bad, 1);
    try {
      env::splitWaves();
      ADD_FAILURE() << "DATTN_SPLIT_WAVES=" << bad << " was taken";
    } catch (const Error &e) {
      EXPECT_NE(std::string(e.what()).find("DATTN_SPLIT_WAVES"), std::string::npos) << e.what();
    }
  }
  ::unsetenv("DATTN_SPLIT_WAVES");
}

TEST(QuerySplit, SparseBlocksSplitByTheTilesTheyKeep) {
  // Random blocks reach any query tile, so a key tile's walk ranges over
  // the whole sequence (257 tiles at 16K), but bigbird_gqa's union keeps
  // about 40 of them: three chunks (about 16 kept tiles each) that still
  // cover the range, not 17 mostly empty ones.
  const KernelInfo k = dkvKernel(64, 64);
  const int64_t n = 16384, keyTiles = n / 64;
  const AttentionPlan bigbird = planOf("branch { window(left = 256, right = 256) | "
                                       "global(tokens = 64) | random(block = 64, density = 0.1, "
                                       "seed = 1) }");
  const rt::QuerySplit s = rt::querySplit(k, bigbird.branches[0], n, keyTiles, kNoFill, true);
  EXPECT_EQ(s.chunks, 3);
  EXPECT_EQ(s.chunkedKeyCtas, keyTiles);
  EXPECT_GE(s.tiles * s.chunks, keyTiles + 1) << "the chunks must cover the walk";
  // Nine block pairs in ten kept (density 1 plans as dense): about 233
  // tiles of a column, 15 chunks.
  const AttentionPlan dense = planOf("branch { random(block = 64, density = 0.9, seed = 1) }");
  EXPECT_EQ(rt::querySplit(k, dense.branches[0], n, keyTiles, kNoFill, true).chunks, 15);
  // Dilated blocks keep 1 + 2 rates blocks of a column: no split.
  const AttentionPlan dilated = planOf("branch { dilated_blocks(block = 64, rates = [1, 4, 16]) }");
  EXPECT_EQ(rt::querySplit(k, dilated.branches[0], n, keyTiles, kNoFill, true).chunks, 1);
  // GpuBackward.LongKeyColumnsSplitAcrossCtas's random blocks at N = 2500:
  // 2 chunks of 21 of the walk's 41 tiles.
  const AttentionPlan gpuCase = planOf("branch { window(left = 30, right = 30) | "
                                       "global(tokens = 7) | random(block = 64, density = 0.6, "
                                       "seed = 9) }");
  const rt::QuerySplit g = rt::querySplit(k, gpuCase.branches[0], 2500, 40, kNoFill, true);
  EXPECT_EQ(g.chunks, 2);
  EXPECT_EQ(g.tiles, 21);
  // A block mask (known at run time only) keeps the range as the work.
  const AttentionPlan masked = planOf("branch { block_mask(block = 64) }");
  EXPECT_EQ(rt::querySplit(k, masked.branches[0], n, keyTiles, kNoFill, true).chunks, 17);
}

TEST(QuerySplit, RingWalksSplitByTheRanksRows) {
  // causal_ring's branches on a rank of 16384 rows (its ring kernels: query
  // tiles of 64, key tiles of 128), one block of 2 parts: one for each of
  // two kv heads, so a head's grid covers one part's key tiles
  // (rt::ringKeyGrid).
  const KernelInfo k = dkvKernel(64, 128);
  const int64_t n = 16384, rankTiles = n / 64;
  const std::vector<PackedPart> parts{{0, {0, 1, n}, 0}, {1, {0, 1, n}, 0}};
  const rt::RingKeyGrid grid = rt::ringKeyGrid(parts, 2, n, 1, 128);
  EXPECT_EQ(grid.keyTiles, n / 128);
  EXPECT_EQ(grid.partsPerKvHead, 1);
  const int64_t keyTiles = grid.keyTiles;
  // Global tokens: each part's first key tile, in chunks of
  // kTokenChunkTiles; every other key tile walks alone.
  const AttentionPlan global = planOf(
      "branch { global(tokens = 16) | dilated(segment = inf, dilation = 4, offset = head) }",
      true);
  const BranchPlan &tokens = global.branches.at(0);
  ASSERT_EQ(tokens.kind, BranchKind::Blocks);
  ring::WalkSplit s =
      rt::ringQuerySplit(k, tokens, n, rankTiles, keyTiles, grid.partsPerKvHead, kNoFill);
  EXPECT_EQ(s.prefixTiles, 1);
  EXPECT_EQ(s.chunks, 64);
  EXPECT_EQ(s.tiles, 4);
  EXPECT_EQ(rt::ringSplitGridX(s, grid.partsPerKvHead), keyTiles + 63);
  // The rank's rows bound the walk: a quarter of them, a quarter the chunks.
  s = rt::ringQuerySplit(k, tokens, n, rankTiles / 4, keyTiles / 4, 2, kNoFill);
  EXPECT_EQ(s.chunks, 16);
  // The strided member: every key tile, in chunks of 16 of the rank's 64
  // compact query tiles.
  const BranchPlan &strided = global.branches.at(1);
  ASSERT_EQ(strided.kind, BranchKind::Strided);
  s = rt::ringQuerySplit(k, strided, n, rankTiles / 4, 32, 2, kNoFill);
  EXPECT_EQ(s.prefixTiles, -1);
  EXPECT_EQ(s.chunks, 4);
  EXPECT_EQ(s.tiles, 16);
  EXPECT_EQ(rt::ringSplitGridX(s, 2), 32 * 4);
  // Random blocks: chunks of about 16 of the tiles they keep of the rank's
  // rows (a tenth of 256 tiles, plus the window's), covering the walk.
  const AttentionPlan random = planOf(
      "branch { window(left = 256, right = 0) | random(block = 64, density = 0.1, seed = 3) }",
      true);
  s = rt::ringQuerySplit(k, random.branches[0], n, rankTiles, keyTiles, 2, kNoFill);
  EXPECT_EQ(s.chunks, 3);
  EXPECT_GE(s.tiles * s.chunks, rankTiles);
  // A short window is never split, nor a rank of few rows.
  const AttentionPlan window = planOf("branch { window(left = 300, right = 0) }", true);
  EXPECT_EQ(rt::ringQuerySplit(k, window.branches[0], n, rankTiles, keyTiles, 2, kNoFill).chunks, 1);
  EXPECT_EQ(rt::ringQuerySplit(k, tokens, n, 4, keyTiles, 2, kNoFill).chunks, 1);
  KernelInfo simt = k;
  simt.path = KernelPath::Simt;
  EXPECT_EQ(rt::ringQuerySplit(simt, tokens, n, rankTiles, keyTiles, 2, kNoFill).chunks, 1);
}

TEST(QuerySplit, RingKeyGridTakesTheKvHeadWithMostKeys) {
  // Two kv heads with different rows (a dilated branch's residues): the
  // grid is as long as the longer one; a part of a kv head the spec does
  // not have is an error that says so.
  const std::vector<PackedPart> parts{
      {0, {0, 4, 1000}, 0}, {0, {5000, 4, 10}, 1000}, {1, {1, 4, 300}, 1010}};
  const rt::RingKeyGrid grid = rt::ringKeyGrid(parts, 2, 8192, 4, 128);
  EXPECT_EQ(grid.keyTiles, 8 + 1); // kv head 0: 1000 keys, then a part of 10 (its own tile)
  EXPECT_EQ(grid.partsPerKvHead, 2);
  try {
    rt::ringKeyGrid(parts, 1, 8192, 4, 128);
    ADD_FAILURE() << "a part of kv head 1 with one kv head";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("kv head 1, the spec has 1"), std::string::npos)
        << e.what();
  }
}

TEST(QuerySplit, EveryQueryTileOfEveryWalkOnce) {
  // What the kernel does with blockIdx.x (plan::splitKeyCta, then
  // plan::chunkOfWalk for chunked key CTAs): over the whole grid, each key
  // CTA's walk [t0, t1) is covered once, whatever the walks' lengths.
  for (int64_t keyCtas : {1, 5, 64})
    for (int64_t chunked : {int64_t(0), int64_t(1), int64_t(3), keyCtas})
      for (int64_t chunks : {1, 2, 7})
        for (int64_t tiles : {1, 4, 16}) {
          if (chunked > keyCtas)
            continue;
          std::vector<std::pair<int64_t, int64_t>> walks;
          for (int64_t c = 0; c < keyCtas; ++c)
            walks.push_back({(c * 7) % 11, (c * 7) % 11 + (c * 13) % 90}); // some empty
          std::vector<std::vector<int>> seen(keyCtas, std::vector<int>(200, 0));
          rt::QuerySplit s;
          s.chunks = static_cast<int>(chunks);
          s.tiles = tiles;
          s.chunkedKeyCtas = chunked;
          for (int64_t x = 0; x < s.gridX(keyCtas); ++x) {
            plan::i64 cta, chunk;
            plan::splitKeyCta(x, keyCtas, chunked, chunks, &cta, &chunk);
            ASSERT_LT(cta, keyCtas);
            plan::i64 t0 = walks[cta].first, t1 = walks[cta].second;
            if (chunks > 1 && cta < chunked) {
              if (!plan::chunkOfWalk(chunk, chunks, tiles, &t0, &t1))
                continue;
            } else {
              ASSERT_EQ(chunk, 0) << "x " << x;
            }
            for (plan::i64 t = t0; t < t1; ++t)
              ++seen[cta][t];
          }
          for (int64_t c = 0; c < keyCtas; ++c)
            for (int64_t t = 0; t < 200; ++t)
              ASSERT_EQ(seen[c][t], t >= walks[c].first && t < walks[c].second ? 1 : 0)
                  << "key CTA " << c << " tile " << t << " chunks " << chunks << " tiles "
                  << tiles << " chunked " << chunked;
        }
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
              const int64_t keyTiles = plan::ceilDiv(n, bn);
              const rt::QuerySplit s = rt::querySplit(dkvKernel(bm, bn), b, n, keyTiles, kNoFill, true);
              const int64_t cover = s.chunks == 1 ? INT64_MAX : s.chunks * s.tiles;
              splits += s.chunks > 1;
              for (size_t h = 0; h < b.heads.size(); ++h) {
                std::vector<plan::Member> members;
                for (const MemberPlan &m : b.members)
                  members.push_back(m.forHead(static_cast<int>(h), b.heads[h]));
                for (int64_t j0 = 0; j0 < n; j0 += bn) {
                  if (j0 / bn >= s.chunkedKeyCtas && s.chunks > 1)
                    continue; // not chunked: walks the whole range in one CTA
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

// The finalize kernel's grid: a thread for each step of its widest
// grid-stride loop (eight dQ elements, four dK/dV columns), never the one
// thread per element that left seven CTAs of eight idle.
TEST(FinalizeGrid, AThreadPerStepOfTheWidestLoop) {
  const int64_t qE = 16384LL * 12 * 128, kvGqa = 16384LL * 4 * 64;
  EXPECT_EQ(rt::finalizeGrid(qE, qE, bwd::kFinalizeDq, 256), qE / 8 / 256);
  EXPECT_EQ(rt::finalizeGrid(qE, qE, bwd::kFinalizeDq | bwd::kFinalizeDkv, 256), qE / 4 / 256);
  EXPECT_EQ(rt::finalizeGrid(qE, kvGqa, bwd::kFinalizeDq | bwd::kFinalizeDkv, 256),
            qE / 8 / 256); // GQA: dQ's loop is the wider
  EXPECT_EQ(rt::finalizeGrid(qE, qE, bwd::kZeroDkv, 256), qE / 4 / 256);
  // Ragged counts round up: every step has a thread (the loops would cover
  // a short grid too, at the cost of a second trip).
  for (int64_t e : {1LL, 7LL, 8LL, 9LL, 2047LL, 2049LL, 123457LL})
    for (int what : {int(bwd::kFinalizeDq), int(bwd::kZeroDq), int(bwd::kFinalizeDkv)}) {
      const int64_t perThread = what == bwd::kFinalizeDkv ? 4 : 8;
      const int64_t threads = int64_t(rt::finalizeGrid(e, e, what, 256)) * 256;
      EXPECT_GE(threads * perThread, e) << e << " " << what;
      EXPECT_LT(threads * perThread, e + 256 * perThread) << e << " " << what;
    }
  // The grid's x stays launchable and never empty; the loops take the rest.
  EXPECT_EQ(rt::finalizeGrid(int64_t(1) << 40, 0, bwd::kFinalizeDq, 256), 65535u * 16);
  EXPECT_EQ(rt::stepGrid(0, 256), 1u);
  EXPECT_EQ(rt::stepGrid(257, 256), 2u);
}

// The branch kernels of a module, grouped by branch in launch order: what
// runs side by side (rt::BranchStreams) and what stays in one group's order.
TEST(BranchKernelGroups, EveryBranchKernelOnceInItsBranchsGroup) {
  ParseResult r = parseSpec(
      "attention t { heads = 2 head_dim = 64 dtype = bf16 "
      "branch heads 0..0 { dilated(segment = 256, dilation = 1, offset = 0) } "
      "branch heads 1..1 { window(left = 64, right = 0) | global(tokens = 16) } }",
      "test");
  ASSERT_TRUE(r.ok()) << r.formatDiagnostics();
  std::vector<std::pair<AttentionPlan, EmittedModule>> modules;
  for (const char *arch : {"sm_75", "sm_80"}) {
    PlanOptions po;
    po.arch = arch;
    const AttentionPlan plan = planAttention(r.file.attentions.at(0), po);
    modules.push_back({plan, emitCuda(plan, arch)});
    for (bool deterministic : {false, true})
      modules.push_back({plan, emitCudaBackward(plan, arch, deterministic)});
  }
  int largest = 0;
  for (const auto &[plan, m] : modules) {
    const std::vector<rt::KernelGroup> groups = rt::branchKernelGroups(m);
    ASSERT_EQ(groups.size(), plan.branches.size());
    int covered = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      ASSERT_GE(groups[g].count, 1);
      largest = std::max(largest, groups[g].count);
      for (int k = 0; k < groups[g].count; ++k)
        EXPECT_EQ(m.kernels[groups[g].first + k].branch, static_cast<int>(g));
      covered += groups[g].count;
    }
    int branchKernels = 0;
    for (const KernelInfo &k : m.kernels)
      branchKernels += k.branch >= 0;
    EXPECT_EQ(covered, branchKernels); // no branch kernel outside its group
  }
  EXPECT_EQ(largest, 2); // the deterministic backward's dQ and dK/dV kernels stay together
}

} // namespace
} // namespace dattn
