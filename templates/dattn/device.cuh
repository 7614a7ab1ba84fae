// dattn: the small device vocabulary every kernel uses: 16-bit float types
// and conversions, shared-memory addresses, cp.async, ldmatrix, mma.sync and
// warp reductions. No CUDA toolkit headers: NVRTC compiles this with only a
// driver and libnvrtc present, so everything below is plain CUDA C++ and PTX.
#pragma once

#include "dattn/block_hash.cuh"

#define DATTN_DEV __device__ __forceinline__

namespace dattn {
namespace dev {

/// 16-bit storage types; arithmetic happens in fp32.
struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };
/// Two fp32 accumulator elements, one 8-byte access.
struct alignas(8) Pair {
  float x, y;
};
/// Four, one 16-byte access.
struct alignas(16) Quad {
  float x, y, z, w;
};

DATTN_DEV float toFloat(float x) { return x; }
DATTN_DEV float toFloat(f16 x) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
}
DATTN_DEV float toFloat(bf16 x) { return __uint_as_float((unsigned)x.bits << 16); }

template <class T> DATTN_DEV T fromFloat(float x);
template <> DATTN_DEV float fromFloat<float>(float x) { return x; }
template <> DATTN_DEV f16 fromFloat<f16>(float x) {
  f16 r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
  return r;
}
template <> DATTN_DEV bf16 fromFloat<bf16>(float x) {
  // Round to nearest even by hand: sm_75 has no bf16 conversion instruction.
  unsigned u = __float_as_uint(x);
  bf16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u) { // NaN stays NaN
    r.bits = (unsigned short)((u >> 16) | 0x40);
    return r;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  r.bits = (unsigned short)(u >> 16);
  return r;
}

/// Two floats packed as a 32-bit pair of T (lo in the low half), for mma.
template <class T> DATTN_DEV unsigned pack2(float lo, float hi);
template <> DATTN_DEV unsigned pack2<f16>(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <> DATTN_DEV unsigned pack2<bf16>(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

DATTN_DEV unsigned smemAddress(const void *p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}

/// 16-byte asynchronous copy global -> shared; zero-fills when !valid.
DATTN_DEV void cpAsync16(unsigned dst, const void *src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
/// 4-byte asynchronous copy (one fp32), zero-filling when !valid.
DATTN_DEV void cpAsync4(unsigned dst, const void *src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0));
}
DATTN_DEV void cpAsyncCommit() { asm volatile("cp.async.commit_group;"); }
DATTN_DEV void cpAsyncWaitAll() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
/// Waits until at most N of this thread's committed cp.async groups are pending.
template <int N> DATTN_DEV void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/// Four 8x8 b16 matrices; lane t addresses row t % 8 of matrix t / 8.
DATTN_DEV void ldmatrixX4(unsigned r[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
DATTN_DEV void ldmatrixX4Trans(unsigned r[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// D = A * B + D, m16n8k16, fp32 accumulators.
template <class T> DATTN_DEV void mma16816(float c[4], const unsigned a[4], const unsigned b[2]);
template <> DATTN_DEV void mma16816<f16>(float c[4], const unsigned a[4], const unsigned b[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> DATTN_DEV void mma16816<bf16>(float c[4], const unsigned a[4], const unsigned b[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/// fp32 rounded to TF32 (nearest, ties away from zero): the 32-bit pattern
/// a .tf32 mma operand reads (it would otherwise drop the low 13 bits).
DATTN_DEV unsigned toTf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}
DATTN_DEV unsigned toTf32(unsigned bits) { return toTf32(__uint_as_float(bits)); }

/// D = A * B + D, m16n8k8 on TF32 operands (sm_80+), fp32 accumulators.
/// Fragments (PTX ISA): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8,
/// t + 4); b0 (k = t, n = g), b1 (k = t + 4, n = g); C as for m16n8k16;
/// g = lane / 4, t = lane % 4.
DATTN_DEV void mma1688Tf32(float c[4], const unsigned a[4], const unsigned b[2]) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/// One 32-bit word from shared memory.
DATTN_DEV float ldsF32(unsigned addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr));
  return v;
}

/// dst[0] += a, dst[1] += b in global memory, relaxed and unordered (fp32
/// gradient accumulation). sm_90 has a two-element vector reduction.
DATTN_DEV void reduceAdd2(float *dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(dst), "f"(a), "f"(b) : "memory");
#else
  asm volatile("red.global.add.f32 [%0], %1;" ::"l"(dst), "f"(a) : "memory");
  asm volatile("red.global.add.f32 [%0], %1;" ::"l"(dst + 1), "f"(b) : "memory");
#endif
}

DATTN_DEV float fastExp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

/// sum_d a[d] * b[d] over a warp, where lane l holds a[l + 32 c] in
/// a[c] (registers) and b is a row in global memory.
template <int D, class T, int PER_LANE>
DATTN_DEV float warpDot(const float (&a)[PER_LANE], const T *b, int lane) {
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < PER_LANE; ++c) {
    const int d = lane + 32 * c;
    if (d < D)
      s += a[c] * toFloat(b[d]);
  }
  return s;
}

DATTN_DEV float quadMax(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
DATTN_DEV float quadSum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
DATTN_DEV float warpSum(float x) {
  for (int o = 16; o > 0; o >>= 1)
    x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

/// -infinity: the LSE of an empty row and the score of a masked pair.
DATTN_DEV float negInf() { return __int_as_float(0xff800000); }
/// +infinity.
DATTN_DEV float posInf() { return __int_as_float(0x7f800000); }

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

/// dst[x] = src[x] as T for x < count, by every thread of the grid in
/// grid-stride steps. Where count is a multiple of 8 (head_dim is) a step
/// converts 8 elements: two 16-byte loads and one 16-byte store for a
/// 16-bit T, where one element a thread moved 4 and 2 bytes per
/// instruction and ran far under copy speed (causal_ring's 16M-element
/// finalize: 103 us on an H100). Both pointers are 16-byte aligned (the
/// runtime checks tensors and workspaces).
template <class T> DATTN_DEV void convertGridStride(T *dst, const float *src, long long count) {
  struct alignas(16) Words {
    unsigned a, b, c, d;
  };
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (count % 8 != 0) {
    for (long long x = first; x < count; x += stride)
      dst[x] = fromFloat<T>(src[x]);
    return;
  }
  for (long long x = first; x < count / 8; x += stride) {
    const Quad lo = reinterpret_cast<const Quad *>(src)[2 * x];
    const Quad hi = reinterpret_cast<const Quad *>(src)[2 * x + 1];
    if constexpr (sizeof(T) == 4) {
      reinterpret_cast<Quad *>(dst)[2 * x] = lo;
      reinterpret_cast<Quad *>(dst)[2 * x + 1] = hi;
    } else {
      auto word = [](float a, float b) {
        return (unsigned)fromFloat<T>(a).bits | ((unsigned)fromFloat<T>(b).bits << 16);
      };
      reinterpret_cast<Words *>(dst)[x] =
          Words{word(lo.x, lo.y), word(lo.z, lo.w), word(hi.x, hi.y), word(hi.z, hi.w)};
    }
  }
}

} // namespace dev
} // namespace dattn
