// dattn: the CPU reference. It implements docs/semantics.md directly
// (a membership predicate per pattern, a softmax per branch, the LSE merge of
// branches over the multiset union) in double precision. It knows nothing of
// tiles or plans: it is the definition every kernel is tested against.
#pragma once

#include "dattn/spec.h"

#include <cstdint>
#include <vector>

namespace dattn {

/// A block mask given at run time for a `block_mask(block = B)` pattern, in
/// BSR form over the NB = ceil(N / B) query blocks: the kept key blocks of
/// query block I are colIndices[rowOffsets[I] .. rowOffsets[I + 1]), sorted.
/// One mask serves every head of the branch.
struct BlockMask {
  int64_t block = 0;
  std::vector<int64_t> rowOffsets; ///< NB + 1 entries, non-decreasing, from 0
  std::vector<int64_t> colIndices; ///< sorted and unique within each row, in [0, NB)

  /// Throws ArgumentError saying which entry is wrong if the arrays do not
  /// describe a valid mask for sequence length `seqLen`.
  void validate(int64_t seqLen) const;
  bool contains(int64_t qBlock, int64_t kBlock) const;
  /// From a dense [NB, NB] 0/1 matrix (row-major; nonzero keeps the pair).
  static BlockMask fromDense(int64_t block, int64_t numBlocks, const float *dense);
};

/// Whether key j is in S(h, i) of one pattern term (causal not applied).
bool patternContains(const Pattern &p, int head, int64_t i, int64_t j, int64_t seqLen,
                     const BlockMask *mask);

/// Whether key j is in S_b(h, i): the union of the branch's terms,
/// intersected with {j <= i} when the spec is causal. False for heads the
/// branch does not contain.
bool branchContains(const AttentionSpec &spec, const Branch &b, int head, int64_t i,
                    int64_t j, int64_t seqLen, const BlockMask *mask);

/// Forward attention. Layouts (row-major, float32):
///   q [batch, seqLen, heads, headDim], k and v [batch, seqLen, kvHeads, headDim],
///   out [batch, seqLen, heads, headDim], lse [batch, heads, seqLen].
/// lse is the natural-log sum of exp(scale * q.k) over the multiset union of
/// the branches' key sets; rows with an empty multiset get out = 0 and
/// lse = -inf. `mask` is required iff spec.needsBlockMask().
/// Throws ArgumentError on a missing or invalid mask or a non-positive size.
/// With `rows`, only those query rows are computed (of every batch and
/// head); the other entries of out and lse are left as they were.
void referenceForward(const AttentionSpec &spec, int64_t batch, int64_t seqLen, const float *q,
                      const float *k, const float *v, const BlockMask *mask, float *out,
                      float *lse, int threads = 0, const std::vector<int64_t> *rows = nullptr);

/// Number of (query, key) pairs attended, summed over heads, branches (a
/// pair reachable through two branches counts twice) and batch. Effective
/// FLOPs of a forward pass are 4 * pairs * headDim.
int64_t countAttendedPairs(const AttentionSpec &spec, int64_t batch, int64_t seqLen,
                           const BlockMask *mask);

} // namespace dattn

namespace dattn {

/// How far an implementation's (out, lse) is from the reference's, over the
/// given rows of every batch and head (all rows when `rows` is null).
/// How much worse than the Frobenius tolerance a single row may be.
constexpr double kRowToleranceFactor = 5;

struct Comparison {
  double relError = 0;      ///< ||out - ref|| / ||ref|| (Frobenius)
  double maxRowError = 0;   ///< the worst (batch, row, head) of O, as in maxRowError()
  double maxLseError = 0;   ///< over rows both call non-empty
  size_t nans = 0;          ///< NaN anywhere in out or lse (all rows)
  size_t emptyMismatch = 0; ///< rows empty (LSE = -inf) in one but not the other
  bool within(double tolerance) const {
    return nans == 0 && emptyMismatch == 0 && relError < tolerance &&
           maxRowError < kRowToleranceFactor * tolerance && maxLseError < 1e-2;
  }
};
Comparison compareWithReference(const AttentionSpec &spec, int64_t batch, int64_t seqLen,
                                const float *out, const float *lse, const float *refOut,
                                const float *refLse, const std::vector<int64_t> *rows = nullptr);

/// ||got - want|| / ||want|| over two equally long arrays, counting NaNs in
/// `got` into *nans.
double relativeError(const std::vector<float> &got, const std::vector<float> &want,
                     size_t *nans);

/// The worst row: the maximum over rows r (consecutive runs of rowLength
/// elements) of ||got_r - want_r|| / max(||want_r||, the rms row norm of
/// want). A Frobenius norm hides one wrong row among thousands; this does
/// not, and rows much smaller than the typical one do not blow it up.
double maxRowError(const std::vector<float> &got, const std::vector<float> &want,
                   int64_t rowLength);

/// The tolerance on Comparison::relError for a dtype: 1e-5 fp32 (the exact
/// SIMT path: fp32 arithmetic against a double reference), 3e-3 fp16, 1e-2
/// bf16. Gradients are held to twice these.
double toleranceFor(DType dtype);
/// The same for a spec: fp32 with precision tf32 runs on TF32 tensor cores
/// (10-bit mantissas, ~3e-4 expected), held to 2e-3.
double toleranceFor(const AttentionSpec &spec);
/// The bound on Comparison::maxLseError: 1e-4 for exact fp32, else 1e-2.
double lseToleranceFor(const AttentionSpec &spec);

} // namespace dattn

namespace dattn {

/// Exact gradients of docs/semantics.md in double precision, given
/// dO (same layout as O). Per row, the branches' multiset union is one
/// softmax in which key j has multiplicity c_j (the number of branches of
/// the row's head that reach it): p_j = c_j exp(s_j - L), O = sum_j p_j v_j.
/// With dP_j = dO . v_j and Delta = dO . O:
///   dS_j = p_j (dP_j - Delta),  dQ = scale sum_j dS_j k_j,
///   dK_j += scale dS_j q,        dV_j += p_j dO,
/// dK and dV summed over the query heads that share a kv head. Rows with an
/// empty multiset contribute nothing (zero gradients, never NaN).
/// Layouts: dq like q, dk and dv like k and v; all are overwritten.
void referenceBackward(const AttentionSpec &spec, int64_t batch, int64_t seqLen, const float *q,
                       const float *k, const float *v, const float *dout, const BlockMask *mask,
                       float *dq, float *dk, float *dv);

} // namespace dattn
