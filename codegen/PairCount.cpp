// Attended pairs from a plan (for effective TFLOP/s): FLOPs are counted on
// the pairs a pattern attends, never on tiles' padding or masked elements.
#include "dattn/compiler.h"
#include "dattn/reference.h"

#include <algorithm>

namespace dattn {

PairCount countPairs(const AttentionPlan &plan, int64_t n, int64_t batch, const BlockMask *mask,
                     int64_t budget) {
  PairCount out;
  double total = 0;
  for (const BranchPlan &b : plan.branches) {
    for (size_t k = 0; k < b.heads.size(); ++k) {
      if (b.kind == BranchKind::Strided) {
        for (int64_t s = 0; s < plan::numSegments(b.segment, n); ++s) {
          int64_t r = plan::segmentRows(s, b.segment, n, b.dilation, b.offsets[k]);
          total += plan.causal ? double(r) * (r + 1) / 2 : double(r) * r;
        }
        continue;
      }
      std::vector<plan::Member> members;
      for (const MemberPlan &m : b.members)
        members.push_back(m.forHead(static_cast<int>(k), b.heads[k],
                                    mask ? mask->rowOffsets.data() : nullptr,
                                    mask ? mask->colIndices.data() : nullptr));
      const int count = static_cast<int>(members.size());
      // Work of the exact count: every row's reachable key range.
      auto range = [&](int64_t i, plan::i64 *lo, plan::i64 *hi) {
        plan::unionKeyTiles(members.data(), count, plan.causal, i, i + 1, n, 1, lo, hi);
      };
      plan::i64 lo, hi;
      range(n / 2, &lo, &hi);
      const double work = double(n) * std::max<plan::i64>(1, hi - lo) * b.heads.size();
      const int64_t step = work > double(budget) ? std::max<int64_t>(1, int64_t(work / budget))
                                                 : 1;
      if (step > 1)
        out.exact = false;
      double rowsCounted = 0, pairs = 0;
      for (int64_t i = 0; i < n; i += step) {
        range(i, &lo, &hi);
        for (int64_t j = lo; j < hi; ++j) {
          if (plan.causal && j > i)
            break;
          if (plan::unionContains(members.data(), count, i, j))
            pairs += 1;
        }
        rowsCounted += 1;
      }
      total += pairs * (double(n) / rowsCounted);
    }
  }
  out.pairs = static_cast<int64_t>(total * batch + 0.5);
  return out;
}

} // namespace dattn
