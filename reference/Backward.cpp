// Gradients by definition (see reference.h for the formulas). The forward
// quantities are recomputed here in double from the inputs: the reference
// shares nothing with the kernels' saved LSE or recomputation scheme.
#include "dattn/error.h"
#include "dattn/reference.h"

#include "Parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace dattn {

void referenceBackward(const AttentionSpec &spec, int64_t batch, int64_t n, const float *q,
                       const float *k, const float *v, const float *dout, const BlockMask *mask,
                       float *dq, float *dk, float *dv) {
  if (batch <= 0 || n <= 0)
    throw ArgumentError("reference backward: batch and sequence length must be positive");
  if (spec.needsBlockMask()) {
    if (!mask)
      throw ArgumentError("attention '" + spec.name + "' has a block_mask pattern: a block "
                          "mask must be given");
    mask->validate(n);
  }
  const int H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const double scale = spec.effectiveScale();
  // dK and dV are sums over query heads and rows: accumulate in double.
  std::vector<double> dkAcc(static_cast<size_t>(batch * n * Hkv * D), 0.0),
      dvAcc(dkAcc.size(), 0.0);
  // One task per (batch, kv head): dK and dV rows of a kv head are written
  // only by the query heads of its group, so tasks never share an output.
  const int group = H / Hkv;
  parallelFor(batch * Hkv, 0, [&](int64_t task) {
    const int64_t b = task / Hkv;
    const int hk = static_cast<int>(task % Hkv);
    std::vector<double> s, p, dP, o(D), dqRow(D);
    std::vector<int64_t> keys;
    std::vector<int> mult; // multiplicity of each key in the row's multiset
    for (int h = hk * group; h < (hk + 1) * group; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const float *qi = q + ((b * n + i) * H + h) * D;
        const float *doi = dout + ((b * n + i) * H + h) * D;
        float *dqi = dq + ((b * n + i) * H + h) * D;
        std::fill(dqi, dqi + D, 0.0f);
        std::fill(dqRow.begin(), dqRow.end(), 0.0);
        keys.clear();
        mult.clear();
        for (int64_t j = 0; j < n; ++j) {
          int c = 0;
          for (const auto &br : spec.branches)
            c += branchContains(spec, br, h, i, j, n, mask);
          if (c) {
            keys.push_back(j);
            mult.push_back(c);
          }
        }
        if (keys.empty())
          continue;
        const size_t m = keys.size();
        s.assign(m, 0.0);
        double mx = -std::numeric_limits<double>::infinity();
        for (size_t t = 0; t < m; ++t) {
          const float *kj = k + ((b * n + keys[t]) * Hkv + hk) * D;
          double dot = 0;
          for (int d = 0; d < D; ++d)
            dot += double(qi[d]) * kj[d];
          s[t] = dot * scale;
          mx = std::max(mx, s[t]);
        }
        double sum = 0;
        p.assign(m, 0.0);
        for (size_t t = 0; t < m; ++t)
          sum += (p[t] = mult[t] * std::exp(s[t] - mx));
        std::fill(o.begin(), o.end(), 0.0);
        for (size_t t = 0; t < m; ++t) {
          p[t] /= sum;
          const float *vj = v + ((b * n + keys[t]) * Hkv + hk) * D;
          for (int d = 0; d < D; ++d)
            o[d] += p[t] * vj[d];
        }
        double delta = 0; // dO . O
        for (int d = 0; d < D; ++d)
          delta += double(doi[d]) * o[d];
        dP.assign(m, 0.0);
        for (size_t t = 0; t < m; ++t) {
          const int64_t row = (b * n + keys[t]) * Hkv + hk;
          const float *vj = v + row * D;
          const float *kj = k + row * D;
          for (int d = 0; d < D; ++d)
            dP[t] += double(doi[d]) * vj[d];
          const double dS = p[t] * (dP[t] - delta);
          for (int d = 0; d < D; ++d) {
            dqRow[d] += scale * dS * kj[d];
            dkAcc[row * D + d] += scale * dS * qi[d];
            dvAcc[row * D + d] += p[t] * doi[d];
          }
        }
        for (int d = 0; d < D; ++d)
          dqi[d] = static_cast<float>(dqRow[d]);
      }
    }
  });
  for (size_t x = 0; x < dkAcc.size(); ++x) {
    dk[x] = static_cast<float>(dkAcc[x]);
    dv[x] = static_cast<float>(dvAcc[x]);
  }
}

} // namespace dattn
