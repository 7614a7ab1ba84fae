// dattn: where row i of head h of batch b starts in a [B, N, H, D] tensor.
// The caller's tensor descriptors give the batch, row and head strides in
// elements (packed QKV views, padded rows, heads-major layouts); the last
// dimension is always contiguous. Plain C++: the host fills it, kernels read it.
#pragma once

namespace dattn {

struct Layout {
  long long batch, row, head; ///< strides in elements

#ifdef __CUDACC__
  __host__ __device__
#endif
  long long at(long long b, long long i, long long h) const {
    return b * batch + i * row + h * head;
  }
};

} // namespace dattn
