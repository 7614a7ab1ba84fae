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

} // namespace bwd
} // namespace dattn
