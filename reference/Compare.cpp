// Comparison of an implementation's outputs with the reference's.
#include "dattn/reference.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace dattn {

double toleranceFor(DType dtype) {
  switch (dtype) {
  case DType::F32: return 1e-5;
  case DType::F16: return 3e-3;
  case DType::BF16: return 1e-2;
  }
  return 0;
}

double toleranceFor(const AttentionSpec &spec) {
  return spec.dtype == DType::F32 && spec.precision == Precision::TF32 ? 2e-3
                                                                      : toleranceFor(spec.dtype);
}

double lseToleranceFor(const AttentionSpec &spec) {
  return spec.dtype == DType::F32 && spec.precision != Precision::TF32 ? 1e-4 : 1e-2;
}

double relativeError(const std::vector<float> &got, const std::vector<float> &want,
                     size_t *nans) {
  double diff = 0, norm = 0;
  size_t n = 0;
  for (size_t x = 0; x < got.size() && x < want.size(); ++x) {
    n += std::isnan(got[x]);
    diff += (double(got[x]) - want[x]) * (double(got[x]) - want[x]);
    norm += double(want[x]) * want[x];
  }
  if (nans)
    *nans = n;
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

namespace {

/// Folds rows' (diff, norm) pairs into maxRowError()'s value.
double worstRow(const std::vector<std::pair<double, double>> &rows) {
  double total = 0;
  for (auto [d, n] : rows)
    total += n;
  const double rms = rows.empty() ? 0 : std::sqrt(total / rows.size());
  double worst = 0;
  for (auto [d, n] : rows) {
    const double floor = std::max(std::sqrt(n), rms);
    worst = std::max(worst, floor > 0 ? std::sqrt(d) / floor : std::sqrt(d));
  }
  return worst;
}

} // namespace

double maxRowError(const std::vector<float> &got, const std::vector<float> &want,
                   int64_t rowLength) {
  std::vector<std::pair<double, double>> rows;
  const size_t n = std::min(got.size(), want.size());
  for (size_t r = 0; r + rowLength <= n; r += rowLength) {
    double d = 0, w = 0;
    for (size_t x = r; x < r + rowLength; ++x) {
      const double e = double(got[x]) - want[x];
      d += std::isnan(e) ? INFINITY : e * e;
      w += double(want[x]) * want[x];
    }
    rows.push_back({d, w});
  }
  return worstRow(rows);
}

Comparison compareWithReference(const AttentionSpec &spec, int64_t batch, int64_t n,
                                const float *out, const float *lse, const float *refOut,
                                const float *refLse, const std::vector<int64_t> *rows) {
  const int64_t H = spec.heads, D = spec.headDim;
  Comparison c;
  for (int64_t x = 0; x < batch * n * H * D; ++x)
    c.nans += std::isnan(out[x]);
  for (int64_t x = 0; x < batch * H * n; ++x)
    c.nans += std::isnan(lse[x]);
  double diff = 0, norm = 0;
  std::vector<std::pair<double, double>> rowErrors;
  const int64_t count = rows ? static_cast<int64_t>(rows->size()) : n;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < count; ++r) {
      const int64_t i = rows ? (*rows)[r] : r;
      for (int64_t h = 0; h < H; ++h) {
        double rowDiff = 0, rowNorm = 0;
        for (int64_t d = 0; d < D; ++d) {
          const int64_t x = ((b * n + i) * H + h) * D + d;
          rowDiff += (double(out[x]) - refOut[x]) * (double(out[x]) - refOut[x]);
          rowNorm += double(refOut[x]) * refOut[x];
        }
        diff += rowDiff;
        norm += rowNorm;
        rowErrors.push_back({std::isnan(rowDiff) ? INFINITY : rowDiff, rowNorm});
        const int64_t l = (b * H + h) * n + i;
        if (std::isinf(lse[l]) || std::isinf(refLse[l]))
          c.emptyMismatch += std::isinf(lse[l]) != std::isinf(refLse[l]);
        else
          c.maxLseError = std::max(c.maxLseError, std::fabs(double(lse[l]) - refLse[l]));
      }
    }
  c.relError = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  c.maxRowError = worstRow(rowErrors);
  return c;
}

} // namespace dattn
