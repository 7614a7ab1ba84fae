// tests: random valid specs for property tests, small enough that every
// (head, i, j) can be enumerated. Covers every pattern, unions, head subsets,
// GQA, causal, unbounded extents, dilations up to 12, ragged segments.
#pragma once

#include "dattn/dsl.h"
#include "dattn/reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <dirent.h>
#include <random>
#include <string>
#include <vector>

namespace dattn::test {

/// The .dattn files of examples/, sorted.
/// `count` draws of N(0, 1) from a seeded generator.
inline std::vector<float> randomVector(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(count);
  for (float &x : v)
    x = normal(rng);
  return v;
}

inline std::vector<std::string> exampleFiles() {
  std::vector<std::string> files;
  if (DIR *d = opendir(DATTN_EXAMPLES_DIR)) {
    while (dirent *e = readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 6 && n.substr(n.size() - 6) == ".dattn")
        files.push_back(std::string(DATTN_EXAMPLES_DIR) + "/" + n);
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

class SpecGenerator {
public:
  explicit SpecGenerator(uint64_t seed) : rng_(seed) {}

  int64_t uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(rng_); }
  std::mt19937_64 &rng() { return rng_; }

  Pattern pattern(bool allowBlockMask) {
    Pattern p;
    int kind = static_cast<int>(uniform(0, allowBlockMask ? 7 : 6));
    static const int64_t dilations[] = {1, 2, 3, 4, 6, 12};
    switch (kind) {
    case 0:
      p.kind = PatternKind::Dilated;
      p.dilation = dilations[uniform(0, 5)];
      p.segment = coin(0.15) ? kUnbounded : uniform(1, 80);
      p.offsetIsHead = coin();
      p.offset = p.offsetIsHead ? 0 : uniform(0, p.dilation - 1);
      break;
    case 1:
      p.kind = PatternKind::Window;
      p.left = coin(0.15) ? kUnbounded : uniform(0, 40);
      p.right = coin(0.15) ? kUnbounded : uniform(0, 40);
      break;
    case 2:
      p.kind = PatternKind::Global;
      p.tokens = uniform(0, 20);
      break;
    case 3:
      p.kind = PatternKind::Dense;
      break;
    case 4:
      p.kind = PatternKind::Random;
      p.block = int64_t(16) << uniform(0, 1);
      p.density = coin(0.1) ? 1.0 : uniform(1, 9) / 10.0;
      p.seed = static_cast<uint64_t>(uniform(0, 1000));
      break;
    case 5: {
      p.kind = PatternKind::DilatedBlocks;
      p.block = int64_t(16) << uniform(0, 1);
      int n = static_cast<int>(uniform(1, 3));
      for (int k = 0; k < n; ++k)
        p.rates.push_back(uniform(1, 6));
      break;
    }
    case 6:
      p.kind = PatternKind::Hierarchical;
      p.block = int64_t(16) << uniform(0, 1);
      p.levels = uniform(1, 4);
      break;
    default:
      p.kind = PatternKind::BlockMask;
      p.block = int64_t(16) << uniform(0, 1);
      break;
    }
    return p;
  }

  AttentionSpec spec() {
    AttentionSpec s;
    s.name = "random_spec";
    s.heads = static_cast<int>(uniform(1, 6));
    std::vector<int> divisors;
    for (int d = 1; d <= s.heads; ++d)
      if (s.heads % d == 0)
        divisors.push_back(d);
    s.kvHeads = divisors[uniform(0, static_cast<int64_t>(divisors.size()) - 1)];
    s.headDim = coin() ? 32 : 64;
    s.causal = coin(0.35);
    s.scale = coin(0.2) ? std::optional<double>(0.3) : std::nullopt;
    int branches = static_cast<int>(uniform(1, 3));
    bool maskUsed = false;
    for (int b = 0; b < branches; ++b) {
      Branch br;
      for (int h = 0; h < s.heads; ++h)
        if (coin(0.7))
          br.heads.push_back(h);
      if (br.heads.empty())
        br.heads.push_back(static_cast<int>(uniform(0, s.heads - 1)));
      int terms = static_cast<int>(uniform(1, 3));
      for (int t = 0; t < terms; ++t) {
        Pattern p = pattern(!maskUsed);
        if (p.kind == PatternKind::BlockMask)
          maskUsed = true;
        br.terms.push_back(p);
      }
      s.branches.push_back(br);
    }
    // Through the language and back: the test then uses exactly what a
    // user's file would give, and checks the canonical form parses.
    ParseResult r = parseSpec(s.canonical(), "generated.dattn");
    EXPECT_TRUE(r.ok()) << r.formatDiagnostics() << s.canonical();
    return r.ok() ? r.file.attentions.at(0) : s;
  }

  /// A random valid block mask for `spec` at sequence length n.
  BlockMask mask(const AttentionSpec &spec, int64_t n) {
    BlockMask m;
    m.block = spec.blockMaskBlock();
    int64_t nb = (n + m.block - 1) / m.block;
    std::vector<float> dense(static_cast<size_t>(nb * nb));
    for (float &x : dense)
      x = coin(0.4) ? 1.0f : 0.0f;
    return BlockMask::fromDense(m.block, nb, dense.data());
  }

private:
  std::mt19937_64 rng_;
};

} // namespace dattn::test
