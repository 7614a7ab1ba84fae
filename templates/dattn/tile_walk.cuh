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
// the window's tiles with a pair: a skipped tile costs a 32nd of a test. A
// second ballot keeps which of them are partial, so a kept tile's class
// (whether its pairs need the mask) costs no second test either.
// Strided branches skip nothing inside their range and keep the plain
// loop (no ballot state in the dense kernels' registers).
#pragma once

#include "dattn/tile_plan.cuh"

namespace dattn {
namespace walk {

/// The tiles of [.., t1) that `classOf` (tile -> plan::TileClass) does not
/// skip, in order, and their classes. With BALLOT, next() is called by all
/// 32 lanes of a warp with the same tile (the kernels' walks are
/// warp-uniform); on the host (tests) one thread classifies the window's 32
/// tiles itself.
template <bool BALLOT, class ClassOf> struct Tiles {
  long long t1;
  ClassOf classOf;
  long long window = -1; // BALLOT: the first tile of the window `live` describes
  unsigned live = 0;     // BALLOT: bit x set iff tile window + x has a pair
  unsigned partial = 0;  // BALLOT: bit x set iff tile window + x is partial

  /// The first tile at or after t with a pair (t1 if none).
  DATTN_HD long long next(long long t) {
    if constexpr (!BALLOT) {
      while (t < t1 && classOf(t) == plan::kSkip)
        ++t;
      return t;
    } else {
      while (t < t1) {
        const long long w = t & ~31ll;
        if (w != window) {
          window = w;
          classifyWindow(w);
        }
        const unsigned rest = live & (0xffffffffu << (t - w)); // tiles t..
        if (rest != 0)
          return w + lowestBit(rest);
        t = w + 32;
      }
      return t1;
    }
  }

  /// The class (plan::kFull or kPartial) of tile t, the tile next() returned
  /// last: with BALLOT read from the window's ballots, else classified again.
  DATTN_HD int classOfNext(long long t) {
    if constexpr (!BALLOT)
      return classOf(t);
    else
      return (partial >> (t - window)) & 1u ? plan::kPartial : plan::kFull;
  }

private:
  /// live and partial of the window from tile w (bits past t1 clear). On
  /// the GPU each lane classifies one tile.
  DATTN_HD void classifyWindow(long long w) {
#ifdef __CUDA_ARCH__
    const long long mine = w + threadIdx.x % 32;
    const int c = mine < t1 ? (int)classOf(mine) : (int)plan::kSkip;
    live = __ballot_sync(0xffffffffu, c != plan::kSkip);
    partial = __ballot_sync(0xffffffffu, c == plan::kPartial);
#else
    live = partial = 0;
    for (int x = 0; x < 32; ++x) {
      const int c = w + x < t1 ? (int)classOf(w + x) : (int)plan::kSkip;
      live |= (unsigned)(c != plan::kSkip) << x;
      partial |= (unsigned)(c == plan::kPartial) << x;
    }
#endif
  }
  static DATTN_HD int lowestBit(unsigned bits) { // bits != 0
#ifdef __CUDA_ARCH__
    return __ffs(bits) - 1;
#else
    return __builtin_ctz(bits);
#endif
  }
};

/// The walk of a branch: a ballot per 32 tiles for blocks branches
/// (BLOCKS), the plain loop for strided ones.
template <bool BLOCKS, class ClassOf>
DATTN_HD Tiles<BLOCKS, ClassOf> tiles(long long t1, ClassOf classOf) {
  return Tiles<BLOCKS, ClassOf>{t1, classOf};
}

} // namespace walk
} // namespace dattn
