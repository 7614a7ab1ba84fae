#include "RowSet.h"

#include <algorithm>

namespace dattn::ring {

RowRun clip(const RowRun &r, int64_t lo, int64_t hi) {
  if (r.count <= 0 || hi <= lo)
    return {lo, 1, 0};
  // First member >= lo, last member < hi.
  const int64_t k0 = r.start >= lo ? 0 : (lo - r.start + r.step - 1) / r.step;
  const int64_t last = r.last();
  const int64_t k1 = last < hi ? r.count - 1 : (hi - 1 - r.start) / r.step;
  if (hi - 1 < r.start || k0 > k1 || k0 >= r.count)
    return {lo, 1, 0};
  return {r.start + k0 * r.step, r.step, k1 - k0 + 1};
}

int64_t countRows(const std::vector<RowRun> &runs) {
  int64_t n = 0;
  for (const RowRun &r : runs)
    n += r.count;
  return n;
}

namespace {

/// Re-encodes sorted, distinct rows greedily as maximal progressions of
/// consecutive members (so no member of the set is skipped by a run).
void encode(const std::vector<int64_t> &rows, std::vector<RowRun> &out) {
  size_t x = 0;
  while (x < rows.size()) {
    RowRun r{rows[x], 1, 1};
    if (x + 1 < rows.size()) {
      r.step = rows[x + 1] - rows[x];
      size_t y = x + 1;
      while (y < rows.size() && rows[y] - rows[y - 1] == r.step)
        ++y;
      r.count = static_cast<int64_t>(y - x);
    }
    out.push_back(r);
    x += static_cast<size_t>(r.count);
  }
}

} // namespace

std::vector<RowRun> normalize(std::vector<RowRun> runs) {
  runs.erase(std::remove_if(runs.begin(), runs.end(), [](const RowRun &r) { return r.count <= 0; }),
             runs.end());
  for (RowRun &r : runs)
    if (r.count == 1)
      r.step = 1;
  std::sort(runs.begin(), runs.end(), [](const RowRun &a, const RowRun &b) {
    return a.start != b.start ? a.start < b.start : a.last() > b.last();
  });
  std::vector<RowRun> out;
  size_t x = 0;
  while (x < runs.size()) {
    // A cluster: runs whose spans overlap the first's (transitively).
    int64_t end = runs[x].last();
    size_t y = x + 1;
    bool sameStep = true;
    while (y < runs.size() && runs[y].start <= end) {
      end = std::max(end, runs[y].last());
      sameStep = sameStep && runs[y].step == runs[x].step;
      ++y;
    }
    if (y == x + 1) {
      out.push_back(runs[x]);
    } else if (sameStep && runs[x].step == 1) {
      out.push_back({runs[x].start, 1, end - runs[x].start + 1});
    } else {
      const int64_t base = runs[x].start;
      std::vector<char> in(static_cast<size_t>(end - base + 1), 0);
      for (size_t k = x; k < y; ++k)
        for (int64_t c = 0; c < runs[k].count; ++c)
          in[static_cast<size_t>(runs[k].start + c * runs[k].step - base)] = 1;
      std::vector<int64_t> rows;
      for (size_t k = 0; k < in.size(); ++k)
        if (in[k])
          rows.push_back(base + static_cast<int64_t>(k));
      encode(rows, out);
    }
    x = y;
  }
  return out;
}

} // namespace dattn::ring
