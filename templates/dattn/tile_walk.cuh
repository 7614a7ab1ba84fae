// dattn: a CTA's walk over the tiles of its line (the forward: the key
// tiles of its query tile; the dK/dV kernels: the query tiles of its key
// tile), skipping the tiles without a pair of the branch.
//
// A blocks branch whose members bound their reach (windows, segments,
// global tokens) walks a short range, but random blocks, block masks and
// hierarchies can reach any tile: a query tile of bigbird_gqa at 16K walks
// 256 key tiles to find the 35 or so it attends. Testing them one after
// the other, each a union test with divisions and a block hash on every
// thread, costs more than the products of the tiles it keeps. Here the 32
// lanes of a warp classify a window of 32 tiles at once and a ballot keeps
// the window's tiles with a pair: a skipped tile costs a 32nd of a test.
// Strided branches skip nothing inside their range and keep the plain
// loop (no ballot state in the dense kernels' registers).
#pragma once

#include "dattn/tile_plan.cuh"

namespace dattn {
namespace walk {

/// The tiles of [.., t1) that `classOf` (tile -> plan::TileClass) does not
/// skip, in order. With BALLOT, next() is called by all 32 lanes of a
/// warp with the same tile (the kernels' walks are warp-uniform).
template <bool BALLOT, class ClassOf> struct Tiles {
  long long t1;
  ClassOf classOf;
  long long window = -1; // BALLOT: the first tile of the window `live` describes
  unsigned live = 0;     // BALLOT: bit x set iff tile window + x has a pair

  /// The first tile at or after t with a pair (t1 if none).
  DATTN_DEV long long next(long long t) {
    if constexpr (!BALLOT) {
      while (t < t1 && classOf(t) == plan::kSkip)
        ++t;
      return t;
    } else {
      while (t < t1) {
        const long long w = t & ~31ll;
        if (w != window) { // each lane classifies one tile of the window
          const long long mine = w + threadIdx.x % 32;
          window = w;
          live = __ballot_sync(0xffffffffu, mine < t1 && classOf(mine) != plan::kSkip);
        }
        const unsigned rest = live & (0xffffffffu << (t - w)); // tiles t..
        if (rest != 0)
          return w + __ffs(rest) - 1;
        t = w + 32;
      }
      return t1;
    }
  }
};

/// The walk of a branch: a ballot per 32 tiles for blocks branches
/// (BLOCKS), the plain loop for strided ones.
template <bool BLOCKS, class ClassOf>
DATTN_DEV Tiles<BLOCKS, ClassOf> tiles(long long t1, ClassOf classOf) {
  return Tiles<BLOCKS, ClassOf>{t1, classOf};
}

} // namespace walk
} // namespace dattn
