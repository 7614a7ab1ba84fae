// dattn: the tile plan of an attention, as plain host data read off the
// planned dattn IR (no MLIR types here). Kernels receive the same numbers as
// template constants; tests iterate it with templates/dattn/tile_plan.cuh and
// compare with the reference's key sets.
#pragma once

#include "dattn/spec.h"
#include "dattn/tile_plan.cuh"

#include <cstdint>
#include <string>
#include <vector>

namespace dattn {

enum class BranchKind { Strided, Blocks };

/// One configuration of a kernel family (include/dattn/kernels.h); fields
/// a family does not use stay 0.
struct KernelConfig {
  int blockM = 0;          ///< query rows per tile (backward dK/dV: per step)
  int blockN = 0;          ///< key rows per tile (backward dK/dV: per CTA)
  int rowTilesPerWarp = 0; ///< mma forward: m16 row tiles per warp
  bool atomicDq = false;   ///< backward dK/dV: also adds dQ with fp32 reductions
  bool operator==(const KernelConfig &o) const {
    return blockM == o.blockM && blockN == o.blockN && rowTilesPerWarp == o.rowTilesPerWarp &&
           atomicDq == o.atomicDq;
  }
  std::string describe() const; ///< "m128 n64 t2"
};

/// One kernel of a branch as dattn-select-kernels chose it for the plan's
/// target (the #dattn.kernel attribute).
struct PlannedKernel {
  std::string stage;  ///< "forward", "backward" or "backward_deterministic"
  std::string family; ///< a kernel family's name
  KernelConfig config;
  int candidates = 0; ///< how many configurations the family offered
  std::string origin = "heuristic"; ///< or the tuning database that measured config
};

/// A configuration the autotuner measured for one kernel of one branch:
/// dattn-select-kernels takes it over the heuristic when the family still
/// offers it (PlanOptions::tuned).
struct TunedKernel {
  int branch = 0;
  std::string stage, family;
  KernelConfig config;
  std::string origin; ///< e.g. "user database /path/tuning.json"
  /// The pass option's text: branch/stage/family/m/n/row_tiles/atomic/origin.
  std::string str() const;
  /// The inverse; throws Error naming the text.
  static TunedKernel parse(const std::string &text);
};

/// One union member of a Blocks branch.
struct MemberPlan {
  plan::MemberKind kind = plan::kAll;
  int64_t left = kUnbounded, right = kUnbounded; ///< band
  int64_t tokens = 0;                            ///< prefix
  int64_t segment = kUnbounded, dilation = 1;    ///< segment_masked
  std::vector<int64_t> offsets;                  ///< segment_masked, per branch head
  int64_t block = 0;                             ///< block patterns
  uint64_t seed = 0, keep = 0;                   ///< hash
  int levels = 0;                                ///< hierarchy
  std::vector<int64_t> rates;                    ///< block_offsets
  /// segment_masked only: its pairs are taken out of the union (another
  /// branch of the same heads runs them strided; dattn-split-unions).
  bool excluded = false;

  /// The member's constants for the branch's headIndex-th head (`head`).
  /// The mask arrays are used by block_mask members only.
  plan::Member forHead(int headIndex, int head, const int64_t *maskRows = nullptr,
                       const int64_t *maskCols = nullptr) const {
    plan::Member m{};
    m.kind = kind;
    m.lo = kind == plan::kPrefix ? tokens : left;
    m.hi = right;
    m.segment = segment;
    m.stride = dilation;
    m.offset = offsets.empty() ? 0 : offsets[headIndex];
    m.block = block;
    m.seed = seed;
    m.keep = keep;
    m.head = head;
    m.levels = levels;
    m.excluded = excluded ? 1 : 0;
    m.numRates = static_cast<int>(rates.size());
    for (size_t k = 0; k < rates.size() && k < plan::kMaxRates; ++k)
      m.rates[k] = rates[k];
    // int64_t is `long` on LP64 hosts and plan::i64 is `long long` (the
    // device headers avoid <cstdint>): same size and representation.
    static_assert(sizeof(plan::i64) == sizeof(int64_t), "64-bit indices");
    m.maskRows = reinterpret_cast<const plan::i64 *>(maskRows);
    m.maskCols = reinterpret_cast<const plan::i64 *>(maskCols);
    return m;
  }
};

struct BranchPlan {
  std::vector<int> heads;
  BranchKind kind = BranchKind::Blocks;
  int64_t blockM = 0, blockN = 0;
  // Strided: the branch's one dilated pattern.
  int64_t segment = kUnbounded, dilation = 1;
  std::vector<int64_t> offsets; ///< per branch head
  // Blocks: the union.
  std::vector<MemberPlan> members;
  /// Its kernels for AttentionPlan::target, in launch order per stage.
  std::vector<PlannedKernel> kernels;

  /// "4 heads, strided, segment 2048, dilation 1" or "4 heads, 2 block
  /// member(s)": how tools name a planned branch (plans reorder and merge
  /// the spec's branches, so an index alone does not say which).
  std::string describe() const {
    return std::to_string(heads.size()) + " heads, " +
           (kind == BranchKind::Strided
                ? "strided, segment " +
                      (segment == kUnbounded ? std::string("inf") : std::to_string(segment)) +
                      ", dilation " + std::to_string(dilation)
                : std::to_string(members.size()) + " block member(s)");
  }

  /// The smallest block of the branch's block patterns (random,
  /// dilated_blocks, hierarchical, block_mask); 0 if it has none. The plan's
  /// tiles stay inside it (dattn-plan-tiles).
  int64_t smallestBlock() const {
    int64_t smallest = 0;
    for (const MemberPlan &m : members)
      if (m.block > 0 && (smallest == 0 || m.block < smallest))
        smallest = m.block;
    return smallest;
  }

  /// Blocks branches: how many query rows can reach one key tile of
  /// `keyRows` rows, at most: a band's width plus the tile, two segments of
  /// a masked dilated member plus the tile; kUnbounded for members whose
  /// columns run the whole sequence (global tokens, an unbounded band or
  /// segment, dense) or are scattered over it (block patterns).
  /// withTokens false: global tokens' members left out (the span of the
  /// rest, for a split that chunks the token tiles alone).
  int64_t keyColumnSpan(int64_t keyRows, bool withTokens = true) const {
    int64_t span = 0;
    for (const MemberPlan &m : members) {
      if (m.excluded || (!withTokens && m.kind == plan::kPrefix)) // reach no column here
        continue;
      if (m.kind == plan::kBand && m.left != kUnbounded && m.right != kUnbounded)
        span = span > m.left + m.right + keyRows ? span : m.left + m.right + keyRows;
      else if (m.kind == plan::kSegment && m.segment != kUnbounded)
        span = span > 2 * m.segment + keyRows ? span : 2 * m.segment + keyRows;
      else
        return kUnbounded;
    }
    return span;
  }
};

struct AttentionPlan {
  std::string name;
  int heads = 0, kvHeads = 0, headDim = 0;
  DType dtype = DType::BF16;
  Precision precision = Precision::IEEE;
  double scale = 0; ///< resolved (never the default marker)
  bool causal = false;
  int ring = 1;
  RingLayout ringLayout = RingLayout::Contiguous;
  std::string target; ///< the arch the kernels were chosen for ("" = none yet)
  int smemBytes = 0;  ///< the target's shared memory per block they were chosen for
  std::vector<BranchPlan> branches;
};

} // namespace dattn
