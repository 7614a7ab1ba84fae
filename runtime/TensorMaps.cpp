#include "TensorMaps.h"

#include "Libraries.h"

#include "dattn/error.h"
#include "dattn/kernels.h"
#include "dattn/params.cuh"

namespace dattn::rt {

RowMapShape rowMapShape(const Layout &l, int64_t batch, int64_t n, int64_t heads,
                        int64_t headDim, int elementBytes, int stride, int tileRows) {
  if (stride < 1 || stride > fwd::kTmaMaxStride)
    throw Error("TMA maps step 1 to " + std::to_string(fwd::kTmaMaxStride) +
                " rows, not " + std::to_string(stride));
  // Never stepped when the extent is 1: any multiple of 16 bytes will do.
  auto strideOf = [&](int64_t elements, int64_t extent, int64_t otherwise) {
    return static_cast<cuuint64_t>((extent == 1 ? otherwise : elements) * elementBytes);
  };
  RowMapShape s{};
  s.dims[0] = static_cast<cuuint64_t>(headDim);
  s.dims[1] = static_cast<cuuint64_t>(heads);
  s.dims[2] = static_cast<cuuint64_t>(n);
  s.dims[3] = static_cast<cuuint64_t>(batch);
  s.strides[0] = strideOf(l.head, heads, headDim);
  s.strides[1] = static_cast<cuuint64_t>(l.row * elementBytes);
  s.strides[2] = strideOf(l.batch, batch, l.row * n);
  s.box[0] = 128 / elementBytes; // one 128-byte swizzle span
  s.box[1] = 1;
  s.box[2] = static_cast<cuuint32_t>(fwd::tmaBoxRows(stride, tileRows) * stride);
  s.box[3] = 1;
  s.elementStrides[0] = s.elementStrides[1] = s.elementStrides[3] = 1;
  s.elementStrides[2] = static_cast<cuuint32_t>(stride);
  return s;
}

CUtensorMap encodeRowMap(const void *data, const RowMapShape &shape, DType dtype,
                         const std::string &what) {
  if (dtype != DType::BF16 && dtype != DType::F16)
    throw Error("TMA maps of " + what + ": bf16 or fp16 only, not " + toString(dtype));
  CUtensorMap map;
  const CUresult r = driver().tensorMapEncodeTiled(
      &map,
      dtype == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      4, const_cast<void *>(data), shape.dims, shape.strides, shape.box, shape.elementStrides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    const char *msg = nullptr;
    driver().getErrorString(r, &msg);
    throw Error("encoding the TMA map of " + what + " (dims " + std::to_string(shape.dims[0]) +
                " x " + std::to_string(shape.dims[1]) + " x " + std::to_string(shape.dims[2]) +
                " x " + std::to_string(shape.dims[3]) + ", byte strides " +
                std::to_string(shape.strides[0]) + ", " + std::to_string(shape.strides[1]) +
                ", " + std::to_string(shape.strides[2]) + ", box rows " +
                std::to_string(shape.box[2]) + " step " + std::to_string(shape.elementStrides[2]) +
                ") failed: " + (msg ? msg : "unknown error"));
  }
  return map;
}

CUtensorMap encodeBranchRowMap(const TensorDesc &t, const Layout &l, const BranchPlan &b,
                               int64_t batch, int64_t n, int64_t heads, int64_t headDim,
                               int tileRows, const std::string &what) {
  const int stride = b.kind == BranchKind::Strided ? static_cast<int>(b.dilation) : 1;
  const int elementBytes = static_cast<int>(t.elementBytes());
  return encodeRowMap(t.data,
                      rowMapShape(l, batch, n, heads, headDim, elementBytes, stride, tileRows),
                      t.dtype, what);
}

bool takesTensorMaps(const KernelInfo &ki, const std::vector<std::string> &names,
                     const std::string &where) {
  // The ring's SIMT block kernels (fp32 with precision ieee) belong to no
  // family: they read plain pointers.
  if (ki.family.empty())
    return false;
  const std::vector<std::string> maps = familyNamed(ki.family).tensorMaps();
  if (maps.empty())
    return false;
  if (maps != names)
    throw Error(where + ": kernel " + ki.name + " asks for tensor maps this launcher does not make");
  return true;
}

} // namespace dattn::rt
