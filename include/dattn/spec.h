// dattn: the attention spec, the immutable value every later stage consumes.
//
// A spec file holds one or more `attention` blocks; each parses into an
// AttentionSpec. Semantics are those of docs/semantics.md (see
// docs/spec-language.md for the surface syntax). This header has no MLIR and
// no CUDA in it: it is the contract between the language and everything else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dattn {

/// A position in a spec file (1-based line and column).
struct SourceLoc {
  std::string file;
  int line = 0;
  int col = 0;
};

enum class DType { F16, BF16, F32 };
enum class Precision { IEEE, TF32 };
/// Which rows each of the ring's P ranks holds. Contiguous: rank r holds
/// shard r of P equal shards. Zigzag (for causal attention, whose work grows
/// with the row index): the rows are cut into 2P chunks and rank r holds
/// chunks r and 2P - 1 - r, so every rank gets the same causal work.
enum class RingLayout { Contiguous, Zigzag };

const char *toString(DType t);
const char *toString(Precision p);
const char *toString(RingLayout l);

/// The pattern kinds of docs/semantics.md.
enum class PatternKind {
  Dilated,       ///< dilated(segment, dilation, offset)
  Window,        ///< window(left, right)
  Global,        ///< global(tokens)
  Dense,         ///< dense
  Random,        ///< random(block, density, seed)
  DilatedBlocks, ///< dilated_blocks(block, rates)
  Hierarchical,  ///< hierarchical(block, levels)
  BlockMask,     ///< block_mask(block): BSR given at run time
};

const char *toString(PatternKind k);

/// An extent that may be unbounded (`inf` in the language).
constexpr int64_t kUnbounded = -1;

/// One term of a branch's union. Only the fields of its kind are meaningful;
/// the others keep their defaults so that equality and hashing are exact.
struct Pattern {
  PatternKind kind = PatternKind::Dense;
  // dilated
  int64_t segment = kUnbounded; ///< w (rows per segment), or unbounded
  int64_t dilation = 1;         ///< r >= 1
  bool offsetIsHead = false;    ///< o(h) = h mod r (LongNet eq. 13-15)
  int64_t offset = 0;           ///< constant o in [0, r) when !offsetIsHead
  // window
  int64_t left = 0, right = 0; ///< may be kUnbounded
  // global
  int64_t tokens = 0;
  // block patterns
  int64_t block = 0;          ///< beta, a power of two in [16, 1024]
  double density = 0;         ///< random: fraction of block pairs kept
  uint64_t seed = 0;          ///< random
  std::vector<int64_t> rates; ///< dilated_blocks: J - I in {0, +-r}
  int64_t levels = 0;         ///< hierarchical

  SourceLoc loc;

  /// o(h) for a dilated pattern.
  int64_t offsetFor(int64_t head) const {
    return offsetIsHead ? head % dilation : offset;
  }
  /// random: a block pair is kept iff blockHash(...) < keepThreshold().
  /// Computed once here so host and device agree bit for bit.
  uint64_t keepThreshold() const;
  bool isBlockPattern() const;

  bool operator==(const Pattern &o) const;
  bool operator!=(const Pattern &o) const { return !(*this == o); }
};

/// A branch: a head set and a union of patterns.
struct Branch {
  std::vector<int> heads; ///< sorted, unique, each in [0, heads)
  std::vector<Pattern> terms;
  SourceLoc loc;
};

struct AttentionSpec {
  std::string name;
  int heads = 0;
  int kvHeads = 0; ///< divides heads; query head h reads kv head h / (heads / kvHeads)
  int headDim = 0;
  DType dtype = DType::BF16;
  Precision precision = Precision::IEEE; ///< only meaningful for fp32
  std::optional<double> scale;           ///< default 1/sqrt(headDim)
  bool causal = false;
  int ring = 1; ///< sequence shards (GPUs), each ceil(N / ring) rows (the last may be shorter)
  RingLayout ringLayout = RingLayout::Contiguous;
  std::vector<Branch> branches;
  SourceLoc loc;

  double effectiveScale() const;
  int kvHeadOf(int head) const { return head / (heads / kvHeads); }
  /// Number of patterns needing a block mask at run time (0 or 1).
  bool needsBlockMask() const;
  /// Block size of the run-time block mask (0 if none).
  int64_t blockMaskBlock() const;

  /// The canonical printed form: every default made explicit, one syntax.
  /// Parsing it gives back an equal spec (tested).
  std::string canonical() const;
  /// A stable 64-bit hash of canonical() (FNV-1a), for cache keys.
  uint64_t hash() const;
};

/// Everything one spec file holds.
struct SpecFile {
  std::vector<AttentionSpec> attentions;
  /// The attention called `name`; with an empty name, the only one.
  /// Throws SpecError if there is no such attention (or several and no name).
  const AttentionSpec &select(const std::string &name) const;
};

} // namespace dattn
