// runtime: the grid of a branch kernel, the one place the forward and
// backward runs derive it from what the emitted module records.
#pragma once

#include "dattn/emit.h"
#include "dattn/plan.h"
#include "dattn/ring.h"
#include "dattn/ring_params.cuh"
#include "dattn/tile_plan.cuh"

#include <cstdint>
#include <string>
#include <vector>

namespace dattn::rt {

struct BranchGrid {
  unsigned x = 1;                ///< CTAs along the rows
  long long tilesPerSegment = 0; ///< strided tensor-core kernels: CTAs per segment
};

/// A branch kernel covers ki.rowsPerCta rows per CTA: of each segment's
/// compact rows (strided branches on tensor cores: a segment's residue class
/// of at most ceil(w / r) rows), else of the sequence. y is the branch's
/// heads and z the batch.
inline BranchGrid branchGrid(const KernelInfo &ki, const BranchPlan &b, int64_t seqLen) {
  BranchGrid g;
  if (ki.path == KernelPath::Mma && b.kind == BranchKind::Strided) {
    const int64_t w = plan::segmentLength(b.segment, seqLen);
    const int64_t maxRows = (w + b.dilation - 1) / b.dilation;
    g.tilesPerSegment = (maxRows + ki.rowsPerCta - 1) / ki.rowsPerCta;
    g.x = static_cast<unsigned>(plan::numSegments(b.segment, seqLen) * g.tilesPerSegment);
  } else {
    g.x = static_cast<unsigned>((seqLen + ki.rowsPerCta - 1) / ki.rowsPerCta);
  }
  return g;
}

/// The walk of a tensor-core dK/dV kernel over query tiles, split across
/// CTAs: one CTA per key tile would walk every query tile of a long key
/// column alone (global tokens, a causal prefix, a long segment) while the
/// rest of the GPU idles (causal_ring's global tokens: 256 tiles in one CTA
/// per head). Chunk c of a key tile's walk [t0, t1) covers [t0 + c tiles,
/// t0 + (c + 1) tiles), the last chunk to t1 (so the walk's bound only
/// balances, never drops a tile). Only the key CTAs with long walks are
/// chunked: all of them for a strided branch or a long band, the tiles
/// holding the tokens where global tokens alone make columns long (one
/// CTA per key tile otherwise: a grid of empty chunks delays the busy
/// ones). The chunks add their dK/dV with fp32 reductions, so only a
/// module that accumulates in any order (fp32 accumulators, not
/// deterministic) splits. Grid x: keyCtas + chunkedKeyCtas (chunks - 1)
/// (plan::splitKeyCta).
struct QuerySplit {
  int chunks = 1;
  long long tiles = 0;          ///< query tiles per chunk (0: no split)
  long long chunkedKeyCtas = 0; ///< the first key CTAs that are chunked
  /// The grid's x for `keyCtas` key CTAs.
  long long gridX(long long keyCtas) const { return keyCtas + chunkedKeyCtas * (chunks - 1); }
};
/// A chunk's query tiles: long enough that K/V loads and the reductions
/// stay small next to the chunk's work, short enough to spread one column;
/// shorter where only the few tiles holding global tokens are chunked.
constexpr int64_t kQueryChunkTiles = 16;
constexpr int64_t kTokenChunkTiles = 4;
/// Where every key tile's walk is long (a strided branch, a long band), a
/// split only pays while the key CTAs alone leave the GPU short of work:
/// each chunk loads K and V again and adds its dK/dV (fp32 reductions of
/// the whole key tile, the chunks of one tile on the same addresses). So
/// such a split makes at most keyCtasToFill key CTAs per grid slice (head,
/// batch): kSplitWaves CTAs an SM. Unbounded, the ring split dense at
/// N = 128K (1024 key tiles on each of 12 heads) into 128 chunks a key
/// tile, and its backward took 1.8x one GPU's time (H100, 2026-12-08).
constexpr int kSplitWaves = 8;
int64_t keyCtasToFill(int multiprocessors, int64_t slices, int waves = kSplitWaves);
/// `fill`: keyCtasToFill for the launch's grid (its y and z).
QuerySplit querySplit(const KernelInfo &ki, const BranchPlan &b, int64_t seqLen, int64_t keyCtas,
                      int64_t fill, bool accumulatesInAnyOrder);

/// The same decision for the ring's tensor-core dK/dV kernels on one block
/// (templates/dattn/ring_mma.cuh): walks over the rank's query tiles, at
/// most `rankTiles` (its one or two ranges of rows, compact rows of one
/// residue for a strided branch), for `keyCtas` key tiles of the block's
/// `numParts` parts. Where only global tokens make columns long, the
/// chunked key tiles are each part's first ones (ring::WalkSplit). The
/// ring's dK/dV partials are always fp32 reductions, so any walk may split;
/// `fill` bounds the split of every key tile as in querySplit.
ring::WalkSplit ringQuerySplit(const KernelInfo &ki, const BranchPlan &b, int64_t globalN,
                               int64_t rankTiles, int64_t keyCtas, int numParts, int64_t fill);
/// The grid's x for a split: keyCtas + chunked key tiles x (chunks - 1).
int64_t ringSplitGridX(const ring::WalkSplit &s, int numParts);

/// What sizes those kernels' grid over one block: grid.y runs over the
/// heads and x over the key tiles of the head's kv head only (a block's
/// parts are per kv head; ring::keyPiece), so x covers the most key tiles
/// any kv head has (tiles of tileKeys keys; segment w, dilation), and the
/// chunked prefix tiles the most parts.
struct RingKeyGrid {
  int64_t keyTiles = 0;
  int partsPerKvHead = 0;
};
RingKeyGrid ringKeyGrid(const std::vector<PackedPart> &parts, int kvHeads, int64_t w,
                        int64_t dilation, int64_t tileKeys);

/// The grid x of an elementwise kernel whose loops are grid-stride (any
/// grid is correct): a thread for each of `steps` loop steps, within the
/// launchable x.
unsigned stepGrid(int64_t steps, int threads);
/// The forward's merge finalize (fwd::finalizeOutputs) converts eight
/// elements a thread step (dev::convertGridStride: two 16-byte loads, one
/// store), as does the backward's finalize (bwd::finalizeGradients) for dQ,
/// with four dK/dV columns a step.
constexpr int64_t kConvertElementsPerStep = 8;
constexpr int64_t kDkvColumnsPerStep = 4;
/// The backward finalize's grid for the bits `what` (bwd::FinalizeWhat):
/// a thread per step of its widest loop. One thread per element launched
/// eight times the CTAs a contiguous dQ needs, and the idle ones cost the
/// kernel about half its time (ncu, the head-partitioned backward at 16K:
/// 96 us for 150 MB; docs/perf-notes.md).
unsigned finalizeGrid(int64_t qElems, int64_t kvElems, int what, int threads);

/// Launches kernel `ki` (its CUfunction `fn`) on `stream`. The error
/// message (what, the kernel, grid, threads, shared memory) is built only
/// when the launch fails: runs pay no string work.
void launchKernel(const KernelInfo &ki, void *fn, unsigned gx, unsigned gy, unsigned gz,
                  void *stream, void **args, const std::string &where);

} // namespace dattn::rt
