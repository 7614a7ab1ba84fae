// Forward attention by definition: per (batch, head, row), each branch's
// softmax over its key set, then the LSE merge of the branches (LongNet eq.
// 10), all in double precision.
#include "dattn/error.h"
#include "dattn/reference.h"

#include "Parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace dattn {

namespace {

void checkArguments(const AttentionSpec &spec, int64_t batch, int64_t seqLen,
                    const BlockMask *mask) {
  if (batch <= 0)
    throw ArgumentError("batch must be positive, got " + std::to_string(batch));
  if (seqLen <= 0)
    throw ArgumentError("sequence length must be positive, got " + std::to_string(seqLen));
  if (spec.needsBlockMask()) {
    if (!mask)
      throw ArgumentError("attention '" + spec.name +
                          "' has a block_mask pattern: a block mask must be given");
    if (mask->block != spec.blockMaskBlock())
      throw ArgumentError("block mask has block size " + std::to_string(mask->block) +
                          " but the spec's block_mask uses " +
                          std::to_string(spec.blockMaskBlock()));
    mask->validate(seqLen);
  }
}

} // namespace

void referenceForward(const AttentionSpec &spec, int64_t batch, int64_t seqLen, const float *q,
                      const float *k, const float *v, const BlockMask *mask, float *out,
                      float *lse, int threads, const std::vector<int64_t> *rows) {
  checkArguments(spec, batch, seqLen, mask);
  const int H = spec.heads, Hkv = spec.kvHeads, D = spec.headDim;
  const int64_t N = seqLen;
  const double scale = spec.effectiveScale();
  const double negInf = -std::numeric_limits<double>::infinity();
  if (rows)
    for (int64_t i : *rows)
      if (i < 0 || i >= N) // checked here: worker threads must not throw
        throw ArgumentError("reference: row " + std::to_string(i) + " is outside [0, " +
                            std::to_string(N) + ")");

  parallelFor(batch * H, threads, [&](int64_t bh) {
    const int64_t b = bh / H;
    const int h = static_cast<int>(bh % H);
    const int hk = spec.kvHeadOf(h);
    std::vector<double> scores, ob(D), acc(D);
    std::vector<int64_t> keys;
    const int64_t numRows = rows ? static_cast<int64_t>(rows->size()) : N;
    for (int64_t r = 0; r < numRows; ++r) {
      const int64_t i = rows ? (*rows)[r] : r;
      const float *qi = q + ((b * N + i) * H + h) * D;
      // Merge state over branches: L = log sum_b exp(l_b), and
      // acc = sum_b exp(l_b - Lmax) * O_b with a running maximum Lmax.
      double lmax = negInf, wsum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (const auto &br : spec.branches) {
        // branchContains, with its per-row parts (head membership, the
        // causal bound) hoisted out of the loop over keys.
        if (!std::binary_search(br.heads.begin(), br.heads.end(), h))
          continue;
        keys.clear();
        const int64_t keyEnd = spec.causal ? i + 1 : N;
        for (int64_t j = 0; j < keyEnd; ++j)
          for (const auto &p : br.terms)
            if (patternContains(p, h, i, j, N, mask)) {
              keys.push_back(j);
              break;
            }
        if (keys.empty())
          continue; // l_b = -inf: this branch adds nothing for this row
        scores.resize(keys.size());
        double m = negInf;
        for (size_t t = 0; t < keys.size(); ++t) {
          const float *kj = k + ((b * N + keys[t]) * Hkv + hk) * D;
          double s = 0;
          for (int d = 0; d < D; ++d)
            s += static_cast<double>(qi[d]) * kj[d];
          scores[t] = s * scale;
          m = std::max(m, scores[t]);
        }
        double sum = 0;
        std::fill(ob.begin(), ob.end(), 0.0);
        for (size_t t = 0; t < keys.size(); ++t) {
          double p = std::exp(scores[t] - m);
          sum += p;
          const float *vj = v + ((b * N + keys[t]) * Hkv + hk) * D;
          for (int d = 0; d < D; ++d)
            ob[d] += p * vj[d];
        }
        const double lb = m + std::log(sum); // this branch's log-sum-exp
        // Fold (l_b, O_b) into the merge, rescaling to the larger maximum.
        const double newMax = std::max(lmax, lb);
        const double oldScale = wsum == 0 ? 0 : std::exp(lmax - newMax);
        const double bScale = std::exp(lb - newMax) / sum; // exp(l_b - newMax) * O_b
        for (int d = 0; d < D; ++d)
          acc[d] = acc[d] * oldScale + ob[d] * bScale;
        wsum = wsum * oldScale + std::exp(lb - newMax);
        lmax = newMax;
      }
      float *oi = out + ((b * N + i) * H + h) * D;
      float &li = lse[(b * H + h) * N + i];
      if (wsum == 0) {
        std::fill(oi, oi + D, 0.0f);
        li = -std::numeric_limits<float>::infinity();
        continue;
      }
      for (int d = 0; d < D; ++d)
        oi[d] = static_cast<float>(acc[d] / wsum);
      li = static_cast<float>(lmax + std::log(wsum));
    }
  });
}

int64_t countAttendedPairs(const AttentionSpec &spec, int64_t batch, int64_t seqLen,
                           const BlockMask *mask) {
  checkArguments(spec, batch, seqLen, mask);
  int64_t pairs = 0;
  for (const auto &br : spec.branches)
    for (int h : br.heads)
      for (int64_t i = 0; i < seqLen; ++i)
        for (int64_t j = 0; j < seqLen; ++j)
          pairs += branchContains(spec, br, h, i, j, seqLen, mask);
  return pairs * batch;
}

} // namespace dattn
