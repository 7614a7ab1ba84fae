#include "Sema.h"

#include "Keywords.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

namespace dattn::dsl {
namespace {

/// The most heads an attention may have.
constexpr int64_t kMaxHeads = 1024;

std::string at(const SourceLoc &l) {
  return std::to_string(l.line) + ":" + std::to_string(l.col);
}

bool isPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

/// Reads a value as an integer in [lo, hi], or `inf` where allowed.
class ValueReader {
public:
  explicit ValueReader(DiagnosticEngine &d) : diags_(d) {}

  bool integer(const Value &v, const std::string &what, int64_t lo, int64_t hi,
               int64_t &out, bool allowInf = false) {
    if (allowInf && v.kind == Value::Kind::Name && v.name == "inf") {
      out = kUnbounded;
      return true;
    }
    if (v.kind != Value::Kind::Int) {
      diags_.error(v.loc, what + " must be an integer" +
                              std::string(allowInf ? " or 'inf'" : "") + ", found " +
                              describe(v));
      return false;
    }
    if (v.intValue < lo || v.intValue > hi) {
      diags_.error(v.loc, what + " must be in [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "], found " +
                              std::to_string(v.intValue));
      return false;
    }
    out = v.intValue;
    return true;
  }

  bool number(const Value &v, const std::string &what, double &out) {
    if (v.kind != Value::Kind::Int && v.kind != Value::Kind::Float) {
      diags_.error(v.loc, what + " must be a number, found " + describe(v));
      return false;
    }
    out = v.floatValue;
    return true;
  }

  bool name(const Value &v, const std::string &what, const std::vector<std::string> &allowed,
            std::string &out) {
    if (v.kind == Value::Kind::Name) {
      for (const auto &a : allowed)
        if (a == v.name) {
          out = a;
          return true;
        }
    }
    std::string list;
    for (const auto &a : allowed)
      list += (list.empty() ? "" : ", ") + a;
    std::string found = describe(v);
    diags_.error(v.loc, what + " must be one of " + list + ", found " + found +
                            (v.kind == Value::Kind::Name ? suggestion(v.name, allowed) : ""));
    return false;
  }

  static std::string describe(const Value &v) {
    switch (v.kind) {
    case Value::Kind::Int: return std::to_string(v.intValue);
    case Value::Kind::Float: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%g", v.floatValue);
      return buf;
    }
    case Value::Kind::Name: return "'" + v.name + "'";
    case Value::Kind::List: return "a list";
    }
    return "a value";
  }

private:
  DiagnosticEngine &diags_;
};

/// The arguments of one pattern: lookup by name, each used at most once;
/// finish() reports unknown and duplicate arguments with suggestions.
class PatternArgs {
public:
  PatternArgs(const PatternNode &p, std::vector<std::string> known, DiagnosticEngine &d)
      : p_(p), known_(std::move(known)), diags_(d) {
    for (const auto &a : p.args) {
      if (std::find(known_.begin(), known_.end(), a.name) == known_.end()) {
        std::string hint = known_.empty() ? " ('" + p.name + "' takes no arguments)"
                                          : suggestion(a.name, known_);
        diags_.error(a.loc, "unknown argument '" + a.name + "' for '" + p.name + "'" + hint);
        ok_ = false;
        continue;
      }
      if (byName_.count(a.name)) {
        diags_.error(a.loc, "argument '" + a.name + "' given twice (first at " +
                                at(byName_[a.name]->loc) + ")");
        ok_ = false;
        continue;
      }
      byName_[a.name] = &a;
    }
  }

  const Value *get(const std::string &name) const {
    auto it = byName_.find(name);
    return it == byName_.end() ? nullptr : &it->second->value;
  }

  const Value *require(const std::string &name, const std::string &example) {
    const Value *v = get(name);
    if (!v) {
      diags_.error(p_.loc, "'" + p_.name + "' needs argument '" + name + "', e.g. " + example);
      ok_ = false;
    }
    return v;
  }

  bool ok() const { return ok_; }
  void fail() { ok_ = false; }

private:
  const PatternNode &p_;
  std::vector<std::string> known_;
  DiagnosticEngine &diags_;
  std::map<std::string, const Arg *> byName_;
  bool ok_ = true;
};

class Checker {
public:
  explicit Checker(DiagnosticEngine &d) : diags_(d), read_(d) {}

  SpecFile check(const FileNode &file) {
    SpecFile out;
    std::map<std::string, SourceLoc> names;
    for (const auto &a : file.attentions) {
      auto it = names.find(a.name);
      if (it != names.end()) {
        diags_.error(a.loc, "attention '" + a.name + "' is defined twice (first at " +
                                at(it->second) + ")");
        continue;
      }
      names[a.name] = a.loc;
      AttentionSpec spec;
      if (checkAttention(a, spec))
        out.attentions.push_back(std::move(spec));
    }
    if (file.attentions.empty() && !diags_.hasErrors())
      diags_.error(1, 1, "the file holds no 'attention' block");
    return out;
  }

private:
  bool checkAttention(const AttentionNode &a, AttentionSpec &spec) {
    bool ok = true;
    spec.name = a.name;
    spec.loc = a.loc;
    std::map<std::string, const SettingNode *> set;
    for (const auto &s : a.settings) {
      if (set.count(s.key)) {
        diags_.error(s.loc, "setting '" + s.key + "' given twice (first at " +
                                at(set[s.key]->loc) + ")");
        ok = false;
        continue;
      }
      set[s.key] = &s;
    }
    auto get = [&](const char *k) -> const Value * {
      auto it = set.find(k);
      return it == set.end() ? nullptr : &it->second->value;
    };
    int64_t v = 0;
    if (const Value *h = get("heads")) {
      ok &= read_.integer(*h, "heads", 1, kMaxHeads, v);
      spec.heads = static_cast<int>(v);
    } else {
      diags_.error(a.loc, "attention '" + a.name + "' needs 'heads = N'");
      ok = false;
    }
    if (const Value *hd = get("head_dim")) {
      if (read_.integer(*hd, "head_dim", 32, 256, v)) {
        if (v % 8 != 0) {
          diags_.error(hd->loc, "head_dim must be a multiple of 8 (16-byte rows), found " +
                                    std::to_string(v));
          ok = false;
        }
        spec.headDim = static_cast<int>(v);
      } else {
        ok = false;
      }
    } else {
      diags_.error(a.loc, "attention '" + a.name + "' needs 'head_dim = D' (32 to 256)");
      ok = false;
    }
    spec.kvHeads = spec.heads;
    if (const Value *kv = get("kv_heads")) {
      if (read_.integer(*kv, "kv_heads", 1, 1024, v)) {
        spec.kvHeads = static_cast<int>(v);
        if (spec.heads > 0 && spec.heads % spec.kvHeads != 0) {
          diags_.error(kv->loc, "kv_heads (" + std::to_string(v) +
                                    ") must divide heads (" + std::to_string(spec.heads) + ")");
          ok = false;
        }
      } else {
        ok = false;
      }
    }
    std::string word;
    if (const Value *dt = get("dtype")) {
      if (read_.name(*dt, "dtype", {"fp16", "bf16", "fp32"}, word))
        spec.dtype = word == "fp16" ? DType::F16 : word == "bf16" ? DType::BF16 : DType::F32;
      else
        ok = false;
    }
    if (const Value *pr = get("precision")) {
      if (read_.name(*pr, "precision", {"ieee", "tf32"}, word)) {
        spec.precision = word == "tf32" ? Precision::TF32 : Precision::IEEE;
        if (spec.precision == Precision::TF32 && spec.dtype != DType::F32) {
          diags_.error(pr->loc, "precision 'tf32' applies to dtype fp32 only; fp16 and "
                                "bf16 always use their own tensor-core math");
          ok = false;
        }
      } else {
        ok = false;
      }
    }
    if (const Value *sc = get("scale")) {
      double d = 0;
      if (read_.number(*sc, "scale", d)) {
        if (!(d > 0) || !std::isfinite(d)) {
          diags_.error(sc->loc, "scale must be a positive finite number");
          ok = false;
        }
        spec.scale = d;
      } else {
        ok = false;
      }
    }
    if (const Value *c = get("causal")) {
      if (read_.name(*c, "causal", {"true", "false"}, word))
        spec.causal = word == "true";
      else
        ok = false;
    }
    if (const Value *r = get("ring")) {
      ok &= read_.integer(*r, "ring", 1, 4096, v);
      spec.ring = static_cast<int>(v);
    }
    if (const Value *l = get("ring_layout")) {
      if (read_.name(*l, "ring_layout", {"contiguous", "zigzag"}, word))
        spec.ringLayout = word == "zigzag" ? RingLayout::Zigzag : RingLayout::Contiguous;
      else
        ok = false;
    }
    if (a.branches.empty()) {
      diags_.error(a.loc, "attention '" + a.name + "' has no branch; add e.g. "
                          "'branch { dilated(segment = 2048, dilation = 1) }'");
      ok = false;
    }
    std::optional<SourceLoc> blockMask; // the first block_mask seen
    for (const auto &b : a.branches) {
      Branch br;
      if (!checkBranch(b, spec.heads, br)) {
        ok = false;
        continue;
      }
      for (const auto &p : br.terms) {
        if (p.kind != PatternKind::BlockMask)
          continue;
        if (blockMask) {
          diags_.error(p.loc, "only one block_mask per attention (the first is at " +
                                  at(*blockMask) + "); the run-time mask is one BSR array");
          ok = false;
        } else {
          blockMask = p.loc;
        }
      }
      spec.branches.push_back(std::move(br));
    }
    return ok;
  }

  bool checkBranch(const BranchNode &b, int heads, Branch &out) {
    bool ok = true;
    out.loc = b.loc;
    if (!b.hasHeads) {
      for (int h = 0; h < heads; ++h)
        out.heads.push_back(h);
    } else {
      std::map<int64_t, SourceLoc> seen;
      for (const auto &r : b.heads) {
        if (r.first > r.last) {
          diags_.error(r.loc, "head range " + std::to_string(r.first) + ".." +
                                  std::to_string(r.last) + " is empty (first > last)");
          ok = false;
          continue;
        }
        // Without a valid head count (already an error) the range is held
        // to the largest one allowed, so that a typo cannot make this loop
        // run for billions of heads.
        const int64_t limit = heads > 0 ? heads : kMaxHeads;
        if (r.first < 0 || r.last >= limit) {
          diags_.error(r.loc, "head range " + std::to_string(r.first) + ".." +
                                  std::to_string(r.last) + " is outside [0, " +
                                  std::to_string(limit) + ")");
          ok = false;
          continue;
        }
        for (int64_t h = r.first; h <= r.last; ++h) {
          if (seen.count(h)) {
            diags_.error(r.loc, "head " + std::to_string(h) + " is listed twice in this branch");
            ok = false;
            break;
          }
          seen[h] = r.loc;
        }
      }
      for (const auto &kv : seen)
        out.heads.push_back(static_cast<int>(kv.first));
    }
    for (const auto &t : b.terms) {
      Pattern p;
      if (checkPattern(t, p))
        out.terms.push_back(std::move(p));
      else
        ok = false;
    }
    return ok;
  }

  bool blockArg(PatternArgs &args, Pattern &p) {
    const Value *v = args.require("block", "'block = 64'");
    if (!v)
      return false;
    int64_t b = 0;
    if (!read_.integer(*v, "block", 16, 4096, b))
      return false;
    if (!isPowerOfTwo(b)) {
      diags_.error(v->loc, "block must be a power of two (16 to 4096), found " +
                               std::to_string(b));
      return false;
    }
    p.block = b;
    return true;
  }

  bool checkPattern(const PatternNode &n, Pattern &p) {
    p.loc = n.loc;
    const std::string &k = n.name;
    bool ok = true;
    if (k == "dilated") {
      p.kind = PatternKind::Dilated;
      PatternArgs args(n, {"segment", "dilation", "offset"}, diags_);
      ok = args.ok();
      if (const Value *v = args.require("segment", "'segment = 2048' (or 'inf')"))
        ok &= read_.integer(*v, "segment", 1, int64_t(1) << 40, p.segment, true);
      else
        ok = false;
      if (const Value *v = args.require("dilation", "'dilation = 2'"))
        ok &= read_.integer(*v, "dilation", 1, 1 << 20, p.dilation);
      else
        ok = false;
      if (const Value *v = args.get("offset")) {
        if (v->kind == Value::Kind::Name && v->name == "head") {
          p.offsetIsHead = true;
        } else if (ok) {
          ok &= read_.integer(*v, "offset (for dilation " + std::to_string(p.dilation) + ")",
                              0, p.dilation - 1, p.offset);
        } else if (v->kind != Value::Kind::Int) {
          ok &= read_.integer(*v, "offset", 0, 0, p.offset);
        }
      }
      return ok;
    }
    if (k == "window") {
      p.kind = PatternKind::Window;
      PatternArgs args(n, {"left", "right"}, diags_);
      ok = args.ok();
      if (const Value *v = args.require("left", "'left = 256' (or 'inf')"))
        ok &= read_.integer(*v, "left", 0, int64_t(1) << 40, p.left, true);
      else
        ok = false;
      if (const Value *v = args.require("right", "'right = 0' (or 'inf')"))
        ok &= read_.integer(*v, "right", 0, int64_t(1) << 40, p.right, true);
      else
        ok = false;
      return ok;
    }
    if (k == "global") {
      p.kind = PatternKind::Global;
      PatternArgs args(n, {"tokens"}, diags_);
      ok = args.ok();
      if (const Value *v = args.require("tokens", "'tokens = 16'"))
        ok &= read_.integer(*v, "tokens", 0, int64_t(1) << 40, p.tokens);
      else
        ok = false;
      return ok;
    }
    if (k == "dense") {
      p.kind = PatternKind::Dense;
      PatternArgs args(n, {}, diags_);
      return args.ok();
    }
    if (k == "random") {
      p.kind = PatternKind::Random;
      PatternArgs args(n, {"block", "density", "seed"}, diags_);
      ok = args.ok();
      ok &= blockArg(args, p);
      if (const Value *v = args.require("density", "'density = 0.1'")) {
        if (read_.number(*v, "density", p.density)) {
          if (!(p.density > 0 && p.density <= 1)) {
            diags_.error(v->loc, "density must be in (0, 1]");
            ok = false;
          }
        } else {
          ok = false;
        }
      } else {
        ok = false;
      }
      if (const Value *v = args.get("seed")) {
        int64_t s = 0;
        ok &= read_.integer(*v, "seed", 0, int64_t(1) << 40, s);
        p.seed = static_cast<uint64_t>(s);
      }
      return ok;
    }
    if (k == "dilated_blocks") {
      p.kind = PatternKind::DilatedBlocks;
      PatternArgs args(n, {"block", "rates"}, diags_);
      ok = args.ok();
      ok &= blockArg(args, p);
      if (const Value *v = args.require("rates", "'rates = [1, 2, 4]'")) {
        if (v->kind != Value::Kind::List || v->items.empty() || v->items.size() > 16) {
          diags_.error(v->loc, "rates must be a list of 1 to 16 integers like [1, 2, 4]");
          ok = false;
        } else {
          for (const auto &item : v->items) {
            int64_t r = 0;
            if (read_.integer(item, "a rate", 1, int64_t(1) << 30, r))
              p.rates.push_back(r);
            else
              ok = false;
          }
        }
      } else {
        ok = false;
      }
      return ok;
    }
    if (k == "hierarchical") {
      p.kind = PatternKind::Hierarchical;
      PatternArgs args(n, {"block", "levels"}, diags_);
      ok = args.ok();
      ok &= blockArg(args, p);
      if (const Value *v = args.require("levels", "'levels = 3'"))
        ok &= read_.integer(*v, "levels", 1, 20, p.levels);
      else
        ok = false;
      return ok;
    }
    if (k == "block_mask") {
      p.kind = PatternKind::BlockMask;
      PatternArgs args(n, {"block"}, diags_);
      ok = args.ok();
      ok &= blockArg(args, p);
      return ok;
    }
    diags_.error(n.loc, "unknown pattern '" + k + "'" + suggestion(k, patternNames()) +
                            " (patterns: " + joinedPatternNames() + ")");
    return false;
  }

  DiagnosticEngine &diags_;
  ValueReader read_;
};

} // namespace

SpecFile checkFile(const FileNode &file, DiagnosticEngine &diags) {
  return Checker(diags).check(file);
}

} // namespace dattn::dsl
