// ring: sets of rows as disjoint arithmetic progressions (RowRun).
#pragma once

#include "dattn/ring.h"

#include <vector>

namespace dattn::ring {

/// The part of `r` inside [lo, hi) (count 0 if none).
RowRun clip(const RowRun &r, int64_t lo, int64_t hi);

/// The exact union of `runs` as disjoint runs in ascending order of start.
/// Runs whose spans overlap and whose steps differ are re-encoded from a
/// bitmap of the overlap only, so the cost stays within the spans given.
std::vector<RowRun> normalize(std::vector<RowRun> runs);

int64_t countRows(const std::vector<RowRun> &runs);

} // namespace dattn::ring
