// runtime: how a tensor-core dK/dV kernel's walk over query tiles is split
// across CTAs (Launch.h).
#include "Launch.h"

#include <algorithm>

namespace dattn::rt {
namespace {

/// How many query rows can reach one key tile of a blocks branch, at most.
int64_t blocksQuerySpan(const BranchPlan &b, int64_t seqLen, int64_t keyRows) {
  const int64_t span = b.keyColumnSpan(keyRows);
  return span == kUnbounded ? seqLen : std::min(span, seqLen);
}

} // namespace

QuerySplit querySplit(const KernelInfo &ki, const BranchPlan &b, int64_t seqLen, int64_t batch,
                      bool accumulatesInAnyOrder) {
  QuerySplit s;
  const int64_t bm = ki.config.blockM;
  if (!accumulatesInAnyOrder || ki.role != KernelRole::DkvPass || ki.path != KernelPath::Mma ||
      bm <= 0)
    return s;
  int64_t walk; // query tiles one key tile's CTA walks, at most
  if (b.kind == BranchKind::Strided) {
    const int64_t w = plan::segmentLength(b.segment, seqLen);
    walk = plan::ceilDiv(plan::ceilDiv(w, b.dilation), bm);
  } else {
    walk = plan::ceilDiv(blocksQuerySpan(b, seqLen, ki.rowsPerCta), bm) + 1;
  }
  const int64_t chunks = std::min<int64_t>(plan::ceilDiv(walk, kQueryChunkTiles),
                                  std::max<int64_t>(1, 65535 / std::max<int64_t>(batch, 1)));
  if (chunks <= 1)
    return s;
  s.chunks = static_cast<int>(chunks);
  s.tiles = plan::ceilDiv(walk, chunks);
  return s;
}

} // namespace dattn::rt
