// runtime: the TMA tensor maps of the forward kernels that load K and V
// through TMA (KernelFamily::takesTensorMaps, templates/dattn/forward_wgmma.cuh).
// One map per tensor and launch: the [B, N, Hk, D] view of the caller's
// strides as a 4-D map {D, N, Hk, B}, boxes of 64 columns (128 bytes,
// 128-byte swizzle: the wgmma tiles' layout) and tmaBoxRows(r) rows taken
// r apart (element stride r along N). Rows past N read as zeros.
#pragma once

#include "dattn/layout.cuh"
#include "dattn/plan.h"

#include <cuda.h>

#include <cstdint>
#include <string>

namespace dattn::rt {

/// What cuTensorMapEncodeTiled is given, innermost dimension first.
struct KvMapShape {
  cuuint64_t dims[4];           ///< D, N, Hk, B
  cuuint64_t strides[3];        ///< bytes between rows, heads, batches
  cuuint32_t box[4];            ///< 64 columns, tmaBoxRows(r) * r rows, 1, 1
  cuuint32_t elementStrides[4]; ///< 1, r, 1, 1
};

/// The map of one K or V tensor for a branch of dilation `stride` (1 for
/// blocks branches). Dimensions of extent 1 get a stride the TMA accepts
/// whatever the caller's (it is never stepped).
KvMapShape kvMapShape(const Layout &l, int64_t batch, int64_t n, int64_t kvHeads,
                      int64_t headDim, int elementBytes, int stride);

/// Encodes it for the tensor at `data` (bf16 or fp16). Throws Error naming
/// `what` ("k", "v") and the driver's reason if the driver refuses it.
CUtensorMap encodeKvMap(const void *data, const KvMapShape &shape, DType dtype,
                        const std::string &what);

} // namespace dattn::rt
