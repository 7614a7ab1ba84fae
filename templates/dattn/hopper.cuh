// dattn: the Hopper (sm_90a) PTX vocabulary the wgmma kernel family is
// written in, without CUDA toolkit headers (NVRTC compiles it alone):
// mbarriers, the tensor-memory accelerator (cp.async.bulk.tensor), wgmma
// with shared-memory descriptors, register reallocation between warpgroups
// (setmaxnreg), named barriers and the async-proxy fence. Every function is
// one instruction or a tight loop around one; the kernels say what they
// mean. Requires --gpu-architecture=sm_90a (plain sm_90 rejects wgmma and
// setmaxnreg). tests/unit/NvrtcCompileTest.cpp compiles a kernel using each.
#pragma once

#include "dattn/device.cuh"

namespace dattn {
namespace hopper {

/// A TMA descriptor (CUtensorMap: 128 opaque bytes, 64-byte aligned),
/// encoded on the host with cuTensorMapEncodeTiled and passed by value as a
/// __grid_constant__ kernel parameter.
struct alignas(64) TensorMap {
  unsigned long long opaque[16];
};

// ---- mbarriers (shared-memory barriers that also count bytes) ----

/// Initializes the mbarrier at shared address `bar` for `arrivals` arrivals
/// per phase; then fence.mbarrier_init makes it visible to the async proxy.
DATTN_DEV void mbarrierInit(unsigned bar, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(arrivals));
}
DATTN_DEV void fenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
/// This thread's arrival, announcing `bytes` that copies will complete.
DATTN_DEV void mbarrierArriveExpect(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}
DATTN_DEV void mbarrierArrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
/// Whether the phase with parity `parity` of the mbarrier has completed.
DATTN_DEV bool mbarrierTryWait(unsigned bar, unsigned parity) {
  unsigned done;
  asm volatile("{\n"
               ".reg .pred p;\n"
               "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
               "selp.u32 %0, 1, 0, p;\n"
               "}\n"
               : "=r"(done)
               : "r"(bar), "r"(parity)
               : "memory");
  return done != 0;
}
DATTN_DEV void mbarrierWait(unsigned bar, unsigned parity) {
  while (!mbarrierTryWait(bar, parity)) {
  }
}

// ---- the tensor-memory accelerator ----

/// Box (c0..c3) of the 4-D tensor `map` into shared memory at `dst`; the
/// mbarrier at `bar` counts its bytes. Coordinates are in elements,
/// innermost first; boxes past a dimension's extent are zero-filled.
DATTN_DEV void tmaLoad4d(unsigned dst, const TensorMap &map, unsigned bar, int c0, int c1, int c2,
                         int c3) {
  asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes "
               "[%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(dst),
               "l"(reinterpret_cast<unsigned long long>(&map)), "r"(bar), "r"(c0), "r"(c1),
               "r"(c2), "r"(c3)
               : "memory");
}
DATTN_DEV void tmaLoad5d(unsigned dst, const TensorMap &map, unsigned bar, int c0, int c1, int c2,
                         int c3, int c4) {
  asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes "
               "[%0], [%1, {%3, %4, %5, %6, %7}], [%2];" ::"r"(dst),
               "l"(reinterpret_cast<unsigned long long>(&map)), "r"(bar), "r"(c0), "r"(c1),
               "r"(c2), "r"(c3), "r"(c4)
               : "memory");
}
/// Orders this thread's ordinary shared-memory writes before later reads
/// by the async proxy (wgmma operands, TMA stores).
DATTN_DEV void fenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// ---- wgmma (bf16 and fp16 operands, fp32 accumulators) ----

/// A shared-memory matrix descriptor: start address, leading and stride
/// byte offsets (16-byte units) and the swizzle mode (0 none, 1 128-byte,
/// 2 64-byte, 3 32-byte). With 128-byte swizzling a K-major tile is stored
/// as 8-row groups of 128-byte rows (stride = 1024 bytes between groups)
/// and the 16-byte chunk c of row r lives at c ^ (r mod 8).
DATTN_HD unsigned long long smemDescriptor(unsigned addr, unsigned leadingBytes,
                                           unsigned strideBytes, unsigned swizzle) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) |
         ((unsigned long long)((leadingBytes >> 4) & 0x3FFF) << 16) |
         ((unsigned long long)((strideBytes >> 4) & 0x3FFF) << 32) |
         ((unsigned long long)(swizzle & 3) << 62);
}
/// Orders register accesses to accumulators before the next wgmma reads them.
DATTN_DEV void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
DATTN_DEV void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
/// Waits until at most N committed wgmma groups are pending.
template <int N> DATTN_DEV void wgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// The accumulator operands of a wgmma, 32 floats per 64 columns, and their
// names in the instruction text: spelled once here for every wrapper below.
#define DATTN_WGMMA_ACC8(d, i)                                                                \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define DATTN_WGMMA_ACC32(d, i)                                                               \
  DATTN_WGMMA_ACC8(d, i), DATTN_WGMMA_ACC8(d, i + 8), DATTN_WGMMA_ACC8(d, i + 16),            \
      DATTN_WGMMA_ACC8(d, i + 24)
#define DATTN_WGMMA_REGS32                                                                    \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define DATTN_WGMMA_REGS64                                                                    \
  DATTN_WGMMA_REGS32 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, "     \
                     "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "   \
                     "%59, %60, %61, %62, %63"

// One wgmma instruction per input type (bf16 or f16: the shapes, operand
// layouts and fp32 accumulators are the same; only the type in the
// instruction's name differs). TYPE is the PTX type, a string literal.
#define DATTN_WGMMA_NAME(SHAPE, TYPE) "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " {"

/// 1 for fp16 operands, 0 for bf16 (the kernels' dev::f16 / dev::bf16).
template <class T> struct WgmmaIsF16 { static constexpr int value = 0; };
template <> struct WgmmaIsF16<dev::f16> { static constexpr int value = 1; };

/// D (64 x 64, fp32, 32 per thread) += A B on the warpgroup's tensor
/// cores, A (64 x 16) and B (16 x 64) from shared memory through
/// descriptors; `accumulate` 0 overwrites D. TRANS_B 0: B is stored [N][K]
/// with K contiguous (K in Q K^T); 1: stored [K][N] with N contiguous (V in
/// P V). TRANS_A 0: A is stored [M][K] with K contiguous; 1: [K][M] with M
/// contiguous (dS in dQ = dS K, stored as dS^T). T: dev::bf16 or dev::f16.
template <class T, int TRANS_B, int TRANS_A = 0>
DATTN_DEV void wgmma64x64(float (&d)[32], unsigned long long descA, unsigned long long descB,
                          int accumulate) {
#define DATTN_WGMMA_64x64(TYPE)                                                               \
  asm volatile("{\n"                                                                          \
               ".reg .pred p;\n"                                                              \
               "setp.ne.b32 p, %34, 0;\n" DATTN_WGMMA_NAME("m64n64k16", TYPE)                 \
               DATTN_WGMMA_REGS32 "}, %32, %33, p, 1, 1, %36, %35;\n"                         \
               "}\n"                                                                          \
               : DATTN_WGMMA_ACC32(d, 0)                                                     \
               : "l"(descA), "l"(descB), "r"(accumulate), "n"(TRANS_B), "n"(TRANS_A))
  if constexpr (WgmmaIsF16<T>::value)
    DATTN_WGMMA_64x64("f16");
  else
    DATTN_WGMMA_64x64("bf16");
#undef DATTN_WGMMA_64x64
}

/// D (64 x 128, fp32, 64 per thread) += A B with A (64 x 16) and B (16 x
/// 128) from shared memory: Q K^T over a 128-key tile, B stored [N][K]
/// (K-major, TRANS_B 0) as in wgmma64x64. The accumulator layout extends
/// the 64 x 64 one: 8-column block i of a warp's 16 rows.
template <class T, int TRANS_B>
DATTN_DEV void wgmma64x128(float (&d)[64], unsigned long long descA, unsigned long long descB,
                           int accumulate) {
#define DATTN_WGMMA_64x128(TYPE)                                                              \
  asm volatile("{\n"                                                                          \
               ".reg .pred p;\n"                                                              \
               "setp.ne.b32 p, %66, 0;\n" DATTN_WGMMA_NAME("m64n128k16", TYPE)                \
               DATTN_WGMMA_REGS64 "}, %64, %65, p, 1, 1, 0, %67;\n"                           \
               "}\n"                                                                          \
               : DATTN_WGMMA_ACC32(d, 0), DATTN_WGMMA_ACC32(d, 32)                           \
               : "l"(descA), "l"(descB), "r"(accumulate), "n"(TRANS_B))
  if constexpr (WgmmaIsF16<T>::value)
    DATTN_WGMMA_64x128("f16");
  else
    DATTN_WGMMA_64x128("bf16");
#undef DATTN_WGMMA_64x128
}

/// The same with A (64 x 16) from registers, in the layout of the fp32
/// accumulator converted to pairs (a thread's four 32-bit registers hold
/// rows lane / 4 (+ 8) of its warp's 16, columns 2 (lane % 4) (+ 1, + 8,
/// + 9)): P V with P kept in registers.
template <class T, int TRANS_B>
DATTN_DEV void wgmma64x64RegA(float (&d)[32], const unsigned (&a)[4], unsigned long long descB,
                              int accumulate) {
#define DATTN_WGMMA_64x64_REG_A(TYPE)                                                         \
  asm volatile("{\n"                                                                          \
               ".reg .pred p;\n"                                                              \
               "setp.ne.b32 p, %37, 0;\n" DATTN_WGMMA_NAME("m64n64k16", TYPE)                 \
               DATTN_WGMMA_REGS32 "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n"             \
               "}\n"                                                                          \
               : DATTN_WGMMA_ACC32(d, 0)                                                     \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(accumulate),    \
                 "n"(TRANS_B))
  if constexpr (WgmmaIsF16<T>::value)
    DATTN_WGMMA_64x64_REG_A("f16");
  else
    DATTN_WGMMA_64x64_REG_A("bf16");
#undef DATTN_WGMMA_64x64_REG_A
}
#undef DATTN_WGMMA_NAME

// ---- warpgroups ----

/// Raises (producers lower) this warpgroup's register budget to N; the
/// kernel must have a register cap at entry (__launch_bounds__(threads, 1)).
template <int N> DATTN_DEV void registersUp() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}
template <int N> DATTN_DEV void registersDown() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}
/// Whether a producer warpgroup at PRODUCER registers and CONSUMERS
/// warpgroups at CONSUMER fit the registers the CTA holds: with
/// __launch_bounds__(threads, 1) ptxas gives each thread 65536 / threads
/// rounded down to a multiple of 8, and setmaxnreg.inc waits until the
/// pool has what it asks for, so a split past the pool never returns (a
/// hang, not an error).
/// CTAS: the CTAs per SM the launch bounds ask for (each holds its share).
template <int PRODUCER, int CONSUMER, int CONSUMERS, int CTAS = 1>
constexpr bool registerSplitFits() {
  constexpr int threads = 128 * (1 + CONSUMERS);
  return 128 * (PRODUCER + CONSUMERS * CONSUMER) <= (65536 / (threads * CTAS)) / 8 * 8 * threads;
}
/// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads.
DATTN_DEV void namedBarrierSync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
DATTN_DEV void namedBarrierArrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

} // namespace hopper
} // namespace dattn
