// runtime: the TMA tensor maps of the kernels that load rows through TMA
// (KernelFamily::tensorMaps: the TMA forward's K and V, the
// warp-specialized dK/dV kernel's Q and dO; fwd::tmaLoadRows). One map per
// tensor and launch: the [B, N, H, D] view of the caller's strides as a 4-D
// map {D, H, N, B} (increasing strides for the usual layouts), boxes of 64
// columns (128 bytes, 128-byte swizzle: the wgmma tiles' layout), one head
// and tmaBoxRows(r, tile rows) rows taken r apart (element stride r along
// N). Rows past N read as zeros.
#pragma once

#include "dattn/emit.h"
#include "dattn/layout.cuh"
#include "dattn/plan.h"
#include "dattn/tensor.h"

#include <cuda.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dattn::rt {

/// What cuTensorMapEncodeTiled is given, innermost dimension first.
struct RowMapShape {
  cuuint64_t dims[4];           ///< D, H, N, B
  cuuint64_t strides[3];        ///< bytes between heads, rows, batches
  cuuint32_t box[4];            ///< 64 columns, 1 head, tmaBoxRows(r, tile rows) * r rows, 1
  cuuint32_t elementStrides[4]; ///< 1, 1, r, 1
};

/// The map of one tensor of `heads` heads for a branch of dilation
/// `stride` (1 for blocks branches) and tiles of `tileRows` rows. Dimensions
/// of extent 1 get a stride the TMA accepts whatever the caller's (it is
/// never stepped).
RowMapShape rowMapShape(const Layout &l, int64_t batch, int64_t n, int64_t heads,
                        int64_t headDim, int elementBytes, int stride, int tileRows);

/// Encodes it for the tensor at `data` (bf16 or fp16). Throws Error naming
/// `what` ("k", "dout", ...) and the driver's reason if the driver refuses it.
CUtensorMap encodeRowMap(const void *data, const RowMapShape &shape, DType dtype,
                         const std::string &what);

/// The map a branch kernel reads `what` through: the [B, N, heads, D]
/// tensor t (its kernel layout l; bf16 or fp16) in tiles of `tileRows`
/// rows, stepping the branch's dilation (1 for blocks branches).
CUtensorMap encodeBranchRowMap(const TensorDesc &t, const Layout &l, const BranchPlan &b,
                               int64_t batch, int64_t n, int64_t heads, int64_t headDim,
                               int tileRows, const std::string &what);

/// Whether kernel `ki` reads through tensor maps: false for none (a kernel
/// of no family, like the ring's SIMT block kernels, included), true if
/// its family's KernelFamily::tensorMaps() are exactly `names` (what the
/// `where` launcher makes); throws Error naming the kernel otherwise.
bool takesTensorMaps(const KernelInfo &ki, const std::vector<std::string> &names,
                     const std::string &where);

} // namespace dattn::rt
