// kernels: the family objects, one accessor each (defined next to their
// family), for the registry in Families.cpp.
#pragma once

#include "dattn/kernels.h"

namespace dattn::kernels {

const KernelFamily &sm80MmaForward();
const KernelFamily &sm80MmaBackwardDkv();
const KernelFamily &sm80MmaBackwardDq();
const KernelFamily &sm90WgmmaForward();
const KernelFamily &sm90WgmmaPipelinedForward();
const KernelFamily &sm90WgmmaTmaForward();
const KernelFamily &sm90WgmmaBackwardDkv();
const KernelFamily &sm90WgmmaWsBackwardDkv();
const KernelFamily &simtForward();
const KernelFamily &simtBackwardDkv();
const KernelFamily &simtBackwardDq();

/// Shared memory of a K/V-stationary dK/dV kernel (bwd::KvSmem: K and V of
/// bn rows, two stages of Q and dO of bm rows, dS^T with atomic dQ, two
/// stages of L and Delta), eb bytes per element: the sm80 and the wgmma
/// dK/dV families' figure.
inline int kvPassSmemBytes(int d, int bm, int bn, bool atomicDq, int eb) {
  return eb * (2 * bn * d + 4 * bm * d + (atomicDq ? bn * bm : 0)) + 4 * bm * 4;
}

} // namespace dattn::kernels
