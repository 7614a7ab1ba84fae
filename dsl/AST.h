// dsl: the syntax tree, exactly as written (no defaults, no checks). Sema
// turns it into an AttentionSpec; keeping the two apart lets the parser stay
// purely syntactic and lets every semantic error point at the written token.
#pragma once

#include "dattn/spec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace dattn::dsl {

struct Value {
  enum class Kind { Int, Float, Name, List } kind = Kind::Int;
  int64_t intValue = 0;
  double floatValue = 0;
  std::string name;         ///< Kind::Name: `bf16`, `true`, `inf`, `head`, ...
  std::vector<Value> items; ///< Kind::List
  SourceLoc loc;
};

struct Arg {
  std::string name;
  Value value;
  SourceLoc loc;
};

struct PatternNode {
  std::string name;
  std::vector<Arg> args;
  SourceLoc loc;
};

/// `a` or `a..b` (inclusive) in a branch's head list.
struct HeadRange {
  int64_t first = 0, last = 0;
  SourceLoc loc;
};

struct BranchNode {
  bool hasHeads = false;
  std::vector<HeadRange> heads;
  std::vector<PatternNode> terms; ///< the union, in written order
  SourceLoc loc;
};

struct SettingNode {
  std::string key;
  Value value;
  SourceLoc loc;
};

struct AttentionNode {
  std::string name;
  std::vector<SettingNode> settings;
  std::vector<BranchNode> branches;
  SourceLoc loc;
};

struct FileNode {
  std::vector<AttentionNode> attentions;
};

} // namespace dattn::dsl
