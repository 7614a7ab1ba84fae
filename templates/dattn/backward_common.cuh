// dattn: what the SIMT and tensor-core backward kernels share.
#pragma once

#include "dattn/backward_params.cuh"
#include "dattn/forward_common.cuh"

// A module emitted for contiguous [B, N, H, D] tensors defines this as 1
// (emitCudaBackward's `contiguous`); the runtime picks that module when
// every tensor of a call is contiguous.
#ifndef DATTN_CONTIGUOUS_TENSORS
#define DATTN_CONTIGUOUS_TENSORS 0
#endif

namespace dattn {
namespace bwd {

constexpr bool kContiguousTensors = DATTN_CONTIGUOUS_TENSORS;

/// The layout kernels index a [B, N, heads, D] tensor with: the caller's
/// strides, or in a contiguous module the same strides written as
/// expressions of N, heads and D. The compiler then shares address
/// arithmetic between tensors with equal strides (q, dO and the fp32 dQ
/// accumulator), which the dK/dV kernel needs: its accumulators use most of
/// the registers, and run-time strides cost it 40 bytes more of spills.
template <int D>
DATTN_DEV Layout layoutOf(const Params &p, const Layout &given, int heads) {
  if constexpr (kContiguousTensors)
    return Layout{p.seqLen * heads * D, (long long)heads * D, D};
  else
    return given;
}

/// The union members of a blocks branch for its headIndex-th head (the
/// generated Branch::member reads the block mask from forward parameters).
template <class Branch>
DATTN_DEV void branchMembers(const Params &p, int headIndex, int head, plan::Member *members) {
  fwd::Params fp{};
  fp.maskRows = p.maskRows;
  fp.maskCols = p.maskCols;
  for (int m = 0; m < Branch::kNumMembers; ++m)
    members[m] = Branch::member(m, headIndex, head, fp);
}

/// For row x of a strided branch's headIndex-th head: false if x is off the
/// head's residue class; else the rows it pairs with (its keys as a query,
/// its queries as a key) are [*begin, *end) with step *step.
template <class Branch>
DATTN_DEV bool stridedPartners(long long x, int headIndex, long long n, long long *begin,
                               long long *end, long long *step) {
  const long long r = Branch::kStride, o = Branch::offset(headIndex);
  if (x % r != o)
    return false;
  plan::segmentLattice(x, Branch::kSegment, n, r, o, begin, end);
  *step = r;
  return true;
}

} // namespace bwd
} // namespace dattn
