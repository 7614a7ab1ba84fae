// dattn: what the SIMT and tensor-core backward kernels share.
#pragma once

#include "dattn/backward_params.cuh"
#include "dattn/forward_common.cuh"

namespace dattn {
namespace bwd {

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
