// The AttentionSpec value: printing, hashing, small derived quantities.
#include "dattn/error.h"
#include "dattn/spec.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace dattn {

const char *toString(DType t) {
  switch (t) {
  case DType::F16: return "fp16";
  case DType::BF16: return "bf16";
  case DType::F32: return "fp32";
  }
  return "?";
}

const char *toString(Precision p) { return p == Precision::TF32 ? "tf32" : "ieee"; }

const char *toString(RingLayout l) { return l == RingLayout::Zigzag ? "zigzag" : "contiguous"; }

const char *toString(PatternKind k) {
  switch (k) {
  case PatternKind::Dilated: return "dilated";
  case PatternKind::Window: return "window";
  case PatternKind::Global: return "global";
  case PatternKind::Dense: return "dense";
  case PatternKind::Random: return "random";
  case PatternKind::DilatedBlocks: return "dilated_blocks";
  case PatternKind::Hierarchical: return "hierarchical";
  case PatternKind::BlockMask: return "block_mask";
  }
  return "?";
}

uint64_t Pattern::keepThreshold() const {
  // density is in (0, 1]; 1 keeps every pair (threshold 2^32 > any hash).
  double t = std::round(density * 4294967296.0);
  if (t < 0)
    t = 0;
  if (t > 4294967296.0)
    t = 4294967296.0;
  return static_cast<uint64_t>(t);
}

bool Pattern::isBlockPattern() const {
  return kind == PatternKind::Random || kind == PatternKind::DilatedBlocks ||
         kind == PatternKind::Hierarchical || kind == PatternKind::BlockMask;
}

bool Pattern::operator==(const Pattern &o) const {
  return kind == o.kind && segment == o.segment && dilation == o.dilation &&
         offsetIsHead == o.offsetIsHead && offset == o.offset && left == o.left &&
         right == o.right && tokens == o.tokens && block == o.block &&
         density == o.density && seed == o.seed && rates == o.rates && levels == o.levels;
}

double AttentionSpec::effectiveScale() const {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(headDim));
}

bool AttentionSpec::needsBlockMask() const { return blockMaskBlock() != 0; }

int64_t AttentionSpec::blockMaskBlock() const {
  for (const auto &b : branches)
    for (const auto &p : b.terms)
      if (p.kind == PatternKind::BlockMask)
        return p.block;
  return 0;
}

namespace {

std::string extent(int64_t v) { return v == kUnbounded ? "inf" : std::to_string(v); }

std::string number(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

std::string headList(const std::vector<int> &heads) {
  std::string out;
  for (size_t k = 0; k < heads.size();) {
    size_t e = k;
    while (e + 1 < heads.size() && heads[e + 1] == heads[e] + 1)
      ++e;
    out += (out.empty() ? "" : ", ") + std::to_string(heads[k]);
    if (e > k)
      out += ".." + std::to_string(heads[e]);
    k = e + 1;
  }
  return out;
}

std::string patternText(const Pattern &p) {
  std::ostringstream os;
  os << toString(p.kind);
  switch (p.kind) {
  case PatternKind::Dilated:
    os << "(segment = " << extent(p.segment) << ", dilation = " << p.dilation
       << ", offset = " << (p.offsetIsHead ? "head" : std::to_string(p.offset)) << ")";
    break;
  case PatternKind::Window:
    os << "(left = " << extent(p.left) << ", right = " << extent(p.right) << ")";
    break;
  case PatternKind::Global:
    os << "(tokens = " << p.tokens << ")";
    break;
  case PatternKind::Dense:
    break;
  case PatternKind::Random:
    os << "(block = " << p.block << ", density = " << number(p.density)
       << ", seed = " << p.seed << ")";
    break;
  case PatternKind::DilatedBlocks: {
    os << "(block = " << p.block << ", rates = [";
    for (size_t k = 0; k < p.rates.size(); ++k)
      os << (k ? ", " : "") << p.rates[k];
    os << "])";
    break;
  }
  case PatternKind::Hierarchical:
    os << "(block = " << p.block << ", levels = " << p.levels << ")";
    break;
  case PatternKind::BlockMask:
    os << "(block = " << p.block << ")";
    break;
  }
  return os.str();
}

} // namespace

std::string AttentionSpec::canonical() const {
  std::ostringstream os;
  os << "attention " << name << " {\n";
  os << "  heads = " << heads << "\n";
  os << "  kv_heads = " << kvHeads << "\n";
  os << "  head_dim = " << headDim << "\n";
  os << "  dtype = " << toString(dtype) << "\n";
  if (dtype == DType::F32)
    os << "  precision = " << toString(precision) << "\n";
  if (scale)
    os << "  scale = " << number(*scale) << "\n";
  os << "  causal = " << (causal ? "true" : "false") << "\n";
  os << "  ring = " << ring << "\n";
  if (ringLayout != RingLayout::Contiguous) // absent from older canonical texts
    os << "  ring_layout = " << toString(ringLayout) << "\n";
  for (const auto &b : branches) {
    os << "  branch heads " << headList(b.heads) << " {\n    ";
    for (size_t k = 0; k < b.terms.size(); ++k)
      os << (k ? "\n    | " : "") << patternText(b.terms[k]);
    os << "\n  }\n";
  }
  os << "}\n";
  return os.str();
}

uint64_t AttentionSpec::hash() const {
  uint64_t h = 1469598103934665603ULL; // FNV-1a
  for (unsigned char c : canonical()) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

const AttentionSpec &SpecFile::select(const std::string &name) const {
  if (name.empty()) {
    if (attentions.size() == 1)
      return attentions.front();
    std::string names;
    for (const auto &a : attentions)
      names += (names.empty() ? "" : ", ") + a.name;
    throw SpecError("the file defines " + std::to_string(attentions.size()) +
                    " attentions (" + names + "); pick one with --name");
  }
  for (const auto &a : attentions)
    if (a.name == name)
      return a;
  std::string names;
  for (const auto &a : attentions)
    names += (names.empty() ? "" : ", ") + a.name;
  throw SpecError("no attention named '" + name + "' in the file (it defines: " + names + ")");
}

} // namespace dattn
