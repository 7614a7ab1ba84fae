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
const KernelFamily &sm90WgmmaBackwardDkv();
const KernelFamily &simtForward();
const KernelFamily &simtBackwardDkv();
const KernelFamily &simtBackwardDq();

} // namespace dattn::kernels
