// The key sets S(h, i) of docs/semantics.md, one predicate per
// pattern, written as the table states them.
#include "dattn/error.h"
#include "dattn/reference.h"

#include "dattn/block_hash.cuh"

#include <algorithm>
#include <string>

namespace dattn {

namespace {
int64_t floorDiv(int64_t a, int64_t b) { return a / b; } // a >= 0, b > 0 here
} // namespace

void BlockMask::validate(int64_t seqLen) const {
  if (block <= 0)
    throw ArgumentError("block mask: block size must be positive, got " + std::to_string(block));
  int64_t nb = (seqLen + block - 1) / block;
  if (static_cast<int64_t>(rowOffsets.size()) != nb + 1)
    throw ArgumentError("block mask: row offsets must have ceil(N / block) + 1 = " +
                        std::to_string(nb + 1) + " entries for N = " + std::to_string(seqLen) +
                        ", block = " + std::to_string(block) + "; got " +
                        std::to_string(rowOffsets.size()));
  if (rowOffsets[0] != 0)
    throw ArgumentError("block mask: row offsets must start at 0, got " +
                        std::to_string(rowOffsets[0]));
  for (int64_t I = 0; I < nb; ++I) {
    if (rowOffsets[I + 1] < rowOffsets[I])
      throw ArgumentError("block mask: row offsets decrease at query block " + std::to_string(I));
  }
  if (rowOffsets[nb] != static_cast<int64_t>(colIndices.size()))
    throw ArgumentError("block mask: the last row offset (" + std::to_string(rowOffsets[nb]) +
                        ") must equal the number of column indices (" +
                        std::to_string(colIndices.size()) + ")");
  for (int64_t I = 0; I < nb; ++I) {
    for (int64_t e = rowOffsets[I]; e < rowOffsets[I + 1]; ++e) {
      int64_t J = colIndices[e];
      if (J < 0 || J >= nb)
        throw ArgumentError("block mask: column index " + std::to_string(J) + " in query block " +
                            std::to_string(I) + " is outside [0, " + std::to_string(nb) + ")");
      if (e > rowOffsets[I] && colIndices[e - 1] >= J)
        throw ArgumentError("block mask: column indices of query block " + std::to_string(I) +
                            " must be sorted and unique");
    }
  }
}

bool BlockMask::contains(int64_t qBlock, int64_t kBlock) const {
  auto first = colIndices.begin() + rowOffsets[qBlock];
  auto last = colIndices.begin() + rowOffsets[qBlock + 1];
  return std::binary_search(first, last, kBlock);
}

BlockMask BlockMask::fromDense(int64_t block, int64_t numBlocks, const float *dense) {
  BlockMask m;
  m.block = block;
  m.rowOffsets.push_back(0);
  for (int64_t I = 0; I < numBlocks; ++I) {
    for (int64_t J = 0; J < numBlocks; ++J)
      if (dense[I * numBlocks + J] != 0.0f)
        m.colIndices.push_back(J);
    m.rowOffsets.push_back(static_cast<int64_t>(m.colIndices.size()));
  }
  return m;
}

bool patternContains(const Pattern &p, int head, int64_t i, int64_t j, int64_t seqLen,
                     const BlockMask *mask) {
  switch (p.kind) {
  case PatternKind::Dilated: {
    int64_t r = p.dilation, o = p.offsetFor(head);
    if (i % r != o || j % r != o)
      return false;
    if (p.segment == kUnbounded)
      return true;
    return floorDiv(i, p.segment) == floorDiv(j, p.segment);
  }
  case PatternKind::Window:
    return (p.left == kUnbounded || i - p.left <= j) &&
           (p.right == kUnbounded || j <= i + p.right);
  case PatternKind::Global:
    return j < p.tokens || i < p.tokens;
  case PatternKind::Dense:
    return true;
  case PatternKind::Random: {
    uint64_t h = blockHash(p.seed, static_cast<unsigned>(head),
                           static_cast<unsigned>(i / p.block), static_cast<unsigned>(j / p.block));
    return h < p.keepThreshold();
  }
  case PatternKind::DilatedBlocks: {
    int64_t d = j / p.block - i / p.block;
    if (d == 0)
      return true;
    for (int64_t r : p.rates)
      if (d == r || d == -r)
        return true;
    return false;
  }
  case PatternKind::Hierarchical: {
    // Level l sees the key blocks that start a group of 2^l blocks in the
    // same or an adjacent group: fine near the diagonal, coarser further out.
    int64_t I = i / p.block, J = j / p.block;
    for (int64_t l = 0; l < p.levels; ++l) {
      int64_t g = int64_t(1) << l;
      int64_t d = I / g - J / g;
      if (J % g == 0 && d >= -1 && d <= 1)
        return true;
    }
    return false;
  }
  case PatternKind::BlockMask:
    if (!mask)
      throw ArgumentError("the spec has a block_mask pattern but no block mask was given");
    return mask->contains(i / p.block, j / p.block);
  }
  (void)seqLen;
  return false;
}

bool branchContains(const AttentionSpec &spec, const Branch &b, int head, int64_t i, int64_t j,
                    int64_t seqLen, const BlockMask *mask) {
  if (spec.causal && j > i)
    return false;
  if (!std::binary_search(b.heads.begin(), b.heads.end(), head))
    return false;
  for (const auto &p : b.terms)
    if (patternContains(p, head, i, j, seqLen, mask))
      return true;
  return false;
}

} // namespace dattn
