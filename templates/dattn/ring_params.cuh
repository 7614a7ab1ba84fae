// dattn: the ring kernels' launch parameters (templates/dattn/ring.cuh).
// Plain C++ shared by the host executor (which fills them) and the kernels.
#pragma once

#include "dattn/layout.cuh"

namespace dattn {
namespace ring {

/// One run of packed key rows (ring/Schedule.cpp's PackedPart), or of the
/// rank's own rows for its local block.
struct Part {
  long long start, step, count; ///< global rows start + x * step, x < count
  long long offset;             ///< the first packed row (or local row)
  int kvHead;
};

/// Where a block's keys live and which rows the rank holds.
struct Params {
  long long globalN;            ///< N of the whole sequence
  long long qBegin[2], qEnd[2]; ///< the rank's rows, in local order (an empty second range: 0, 0)
  const Part *parts;            ///< device array
  int numParts;
  const void *keys, *values;    ///< packed [B][rows][D], or the rank's own k, v
  Layout keyL, valueL;          ///< their strides; packed: {rows * D, D, 0}
};

/// The backward's extra operands for one block (templates/dattn/ring.cuh).
struct Grad {
  const void *dout;   ///< the rank's dO, layout doutL
  Layout doutL;
  const float *delta; ///< [B, H, rows]: dO . O per row and head
  float *dqAcc;       ///< fp32 [B, rows, H, D], contiguous
  float *dk, *dv;     ///< fp32 partials of the block's keys, layout gradL
  Layout gradL;       ///< own rows: [B, rows, kv_heads, D]; packed: {rows * D, D, 0}
};

} // namespace ring
} // namespace dattn
