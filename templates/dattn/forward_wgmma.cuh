// dattn: the Hopper forward kernel (sm_90a, bf16): wgmma from shared memory.
//
// First step of the sm90 family (issue 12), before TMA, warp specialization
// and pingpong: one warpgroup (128 threads) per CTA computes 64 query rows
// of one (batch, head, branch) against key tiles of 64, FlashAttention-2
// style, with the sm80 kernel's row maps, tile classes, masks, online
// softmax and epilogue (forward_mma.cuh), so only the products change:
//   1. cp.async brings the next K, V tiles into the other stage;
//   2. S = Q K^T: D / 16 wgmma m64n64k16, Q and K from shared memory
//      (K-major, 128-byte swizzle);
//   3. partial tiles mask S, the online softmax turns it into P;
//   4. O += P V: wgmma with P from registers (the accumulator layout packed
//      to bf16 pairs is wgmma's register-A layout) and V from shared memory
//      (N-major: V is stored [key][dim], dims contiguous).
// The wgmma accumulator layout is mma.sync's, warp w holding rows 16w..:
// element e of 8-column block i is row lane / 4 + (e / 2) * 8, column
// 8 i + 2 (lane % 4) + e % 2, so s[1][8][4] and acc[1][D / 8][4] are the
// sm80 kernel's fragments with MT = 1.
//
// Shared memory tiles are [D / 64][rows][64] bf16: each 64-column block is
// rows of 128 bytes whose 16-byte chunk c of row r lives at c ^ (r mod 8),
// the canonical 128-byte-swizzle layout (8-row atoms of 1024 bytes).
#pragma once

#include "dattn/forward_mma.cuh"
#include "dattn/hopper.cuh"

namespace dattn {
namespace fwd {

/// A [ROWS, D] bf16 tile as wgmma reads it (above), loaded with cp.async.
template <int D, int ROWS> struct WgmmaTile {
  static_assert(D % 64 == 0 && ROWS % 8 == 0, "wgmma tiles: 64-column blocks, 8-row atoms");
  static constexpr int kBytes = ROWS * D * 2;
  static constexpr int kBlockBytes = ROWS * 128; ///< one 64-column block

  /// Byte offset of 16-byte chunk `ch` (columns 8 ch ..) of row r.
  DATTN_DEV static unsigned chunkOffset(int r, int ch) {
    return (ch / 8) * kBlockBytes + r * 128 + (((ch % 8) ^ (r % 8)) * 16);
  }
  /// Compact rows [a0, a0 + ROWS) of the row map base + a * step (rows at
  /// or past `limit` zero-filled) into the tile at shared address dst; all
  /// 128 threads of the CTA take part.
  template <class T>
  DATTN_DEV static void load(unsigned dst, const T *src, long long rowStride, long long base,
                             long long step, long long a0, long long limit) {
    constexpr int kChunks = D / 8;
    for (int c = threadIdx.x; c < ROWS * kChunks; c += 128) {
      const int r = c / kChunks, ch = c % kChunks;
      const long long a = a0 + r;
      const bool valid = a < limit;
      const T *g = valid ? src + (base + a * step) * rowStride + ch * 8 : src;
      dev::cpAsync16(dst + chunkOffset(r, ch), g, valid);
    }
  }
  /// The K-major descriptor of k step kk (16 columns) of the tile at `at`:
  /// its 64-column block, 32 bytes per step inside it; 8-row groups 1024
  /// bytes apart.
  DATTN_DEV static unsigned long long kMajor(unsigned at, int kk) {
    return hopper::smemDescriptor(at + (kk / 4) * kBlockBytes + (kk % 4) * 32, 16, 1024, 1);
  }
  /// The N-major descriptor of rows [16 j, 16 j + 16) (the k step) and
  /// 64-column block b: 8-row groups 1024 bytes apart along k.
  DATTN_DEV static unsigned long long nMajor(unsigned at, int j, int b) {
    return hopper::smemDescriptor(at + b * kBlockBytes + j * 2048, kBlockBytes, 1024, 1);
  }
};

/// Shared memory of wgmmaForward: Q, and two stages of K and V (the host's
/// family asserts its figure against this in the generated source).
template <int D> struct WgmmaSmem {
  static constexpr int kBytes = WgmmaTile<D, 64>::kBytes * 5;
};

/// A 64 x 64 accumulator block of fragments as the 32 floats wgmma takes.
DATTN_DEV float (&wgmmaBlock(float (&f)[4]))[32] {
  return *reinterpret_cast<float(*)[32]>(&f[0]);
}

/// The kernel: one warpgroup, 64 query rows of one (batch, head, branch).
template <class T, int D, int MODE, class Branch>
__device__ void wgmmaForward(const Params &p) {
  static_assert(sizeof(T) == 2, "the wgmma forward takes bf16");
  constexpr int BM = 64, BN = 64;
  using QTile = WgmmaTile<D, BM>;
  using KTile = WgmmaTile<D, BN>;
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned sQ = dev::smemAddress(smemRaw), sK = sQ + QTile::kBytes,
                 sV = sK + 2 * KTile::kBytes; // K and V: two stages each

  // The CTA's work, as in mmaForward. Not shared through a struct: one
  // (ForwardCta, tried) cost the sm80 kernel 8-80 bytes of stack and
  // spills under ptxas, and that kernel's speed is measured.
  const int warpId = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int headIndex = blockIdx.y, head = Branch::head(headIndex);
  const long long batch = blockIdx.z, n = p.seqLen;
  const int kvHead = head / p.groupSize;

  TileRange tr;
  plan::Member members[Branch::kNumMembers > 0 ? Branch::kNumMembers : 1];
  if (!ctaTileRange<Branch, BM, BN>(p, headIndex, head, members, &tr))
    return;
  auto nextTile = [&](long long t) {
    while (t < tr.t1 && keyTileClass<Branch, BM, BN>(tr, members, n, t) == plan::kSkip)
      ++t;
    return t;
  };
  const T *q = (const T *)p.q + p.qL.at(batch, 0, head);
  const T *k = (const T *)p.k + p.kL.at(batch, 0, kvHead);
  const T *v = (const T *)p.v + p.vL.at(batch, 0, kvHead);
  auto loadKeys = [&](int stage, long long t) {
    KTile::load(sK + stage * KTile::kBytes, k, p.kL.row, tr.base, tr.step, t * BN, tr.count);
    KTile::load(sV + stage * KTile::kBytes, v, p.vL.row, tr.base, tr.step, t * BN, tr.count);
  };

  long long t = nextTile(tr.t0);
  QTile::load(sQ, q, p.qL.row, tr.base, tr.step, tr.qa0, tr.count);
  if (t < tr.t1)
    loadKeys(0, t);
  dev::cpAsyncCommit();

  float acc[1][D / 8][4];
  warp::zero(acc);
  warp::OnlineSoftmax<1> softmax;
  softmax.init();
  const float scaleLog2 = p.scale * dev::kLog2e;
  const int row0 = warpId * 16; // this warp's rows in the CTA's tile

  for (int stage = 0; t < tr.t1; stage ^= 1) {
    dev::cpAsyncWaitAll();
    hopper::fenceProxyAsync(); // cp.async wrote what the tensor cores read next
    __syncthreads();
    const int cls = keyTileClass<Branch, BM, BN>(tr, members, n, t);
    const long long tNext = nextTile(t + 1);
    if (tNext < tr.t1) // 1. the next K, V tiles into the other stage
      loadKeys(stage ^ 1, tNext);
    dev::cpAsyncCommit();
    const unsigned tk = sK + stage * KTile::kBytes, tv = sV + stage * KTile::kBytes;

    float s[1][BN / 8][4]; // 2. S = Q K^T (the first step overwrites s)
    warp::zero(s);
    hopper::wgmmaFence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      hopper::wgmma64x64Bf16<0>(wgmmaBlock(s[0][0]), QTile::kMajor(sQ, kk),
                                KTile::kMajor(tk, kk), kk > 0);
    hopper::wgmmaCommit();
    hopper::wgmmaWait<0>();
    if (cls == plan::kPartial) // 3. masks on partial tiles only
      maskPartialTile<Branch, BN, 1>(s, members, tr.count, tr.qa0 + row0, t * BN, lane);
    softmax.update(s, acc, scaleLog2);

    // 4. O += P V, P packed to bf16 first: registers written between
    // wgmmas would make ptxas serialize them.
    unsigned a[BN / 16][4];
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      a[j][0] = dev::pack2<T>(s[0][2 * j][0], s[0][2 * j][1]);
      a[j][1] = dev::pack2<T>(s[0][2 * j][2], s[0][2 * j][3]);
      a[j][2] = dev::pack2<T>(s[0][2 * j + 1][0], s[0][2 * j + 1][1]);
      a[j][3] = dev::pack2<T>(s[0][2 * j + 1][2], s[0][2 * j + 1][3]);
    }
    hopper::wgmmaFence();
#pragma unroll
    for (int j = 0; j < BN / 16; ++j)
#pragma unroll
      for (int b = 0; b < D / 64; ++b)
        hopper::wgmma64x64Bf16RegA<1>(wgmmaBlock(acc[0][8 * b]), a[j], KTile::nMajor(tv, j, b),
                                      1);
    hopper::wgmmaCommit();
    hopper::wgmmaWait<0>();
    t = tNext;
  }
  storeRows<T, D, 1, MODE>(p, acc, softmax, tr, tr.qa0 + row0, batch, head, lane);
}

} // namespace fwd
} // namespace dattn
