// The CPU reference against hand-written cases of docs/semantics.md:
// predicates on small examples, the softmax, the multiset merge of branches,
// GQA, causal masking and empty rows.
#include "RandomSpec.h"

#include "dattn/error.h"

#include <gtest/gtest.h>

#include <cmath>

namespace dattn::test {
namespace {

AttentionSpec parseOne(const std::string &text) {
  ParseResult r = parseSpec(text, "test.dattn");
  EXPECT_TRUE(r.ok()) << r.formatDiagnostics();
  return r.ok() ? r.file.attentions.at(0) : AttentionSpec{};
}

struct Outputs {
  std::vector<float> out, lse;
};

Outputs forward(const AttentionSpec &s, int64_t n, const std::vector<float> &q,
            const std::vector<float> &k, const std::vector<float> &v,
            const BlockMask *mask = nullptr) {
  Outputs r;
  r.out.assign(static_cast<size_t>(n * s.heads * s.headDim), NAN);
  r.lse.assign(static_cast<size_t>(s.heads * n), NAN);
  referenceForward(s, 1, n, q.data(), k.data(), v.data(), mask, r.out.data(), r.lse.data());
  return r;
}

TEST(Membership, DilatedFollowsLongNet) {
  // segment 8, dilation 2, offset 1: rows 1,3,5,7 attend to 1,3,5,7 of their
  // segment; even rows attend to nothing; row 9 only to 9,11,13,15.
  Pattern p;
  p.kind = PatternKind::Dilated;
  p.segment = 8;
  p.dilation = 2;
  p.offset = 1;
  std::vector<int64_t> keys;
  for (int64_t j = 0; j < 16; ++j)
    if (patternContains(p, 0, 3, j, 16, nullptr))
      keys.push_back(j);
  EXPECT_EQ(keys, (std::vector<int64_t>{1, 3, 5, 7}));
  for (int64_t j = 0; j < 16; ++j)
    EXPECT_FALSE(patternContains(p, 0, 4, j, 16, nullptr));
  EXPECT_TRUE(patternContains(p, 0, 9, 15, 16, nullptr));
  EXPECT_FALSE(patternContains(p, 0, 9, 7, 16, nullptr));
  // offset = head: head 5 with dilation 2 uses offset 1.
  p.offsetIsHead = true;
  EXPECT_TRUE(patternContains(p, 5, 3, 1, 16, nullptr));
  EXPECT_FALSE(patternContains(p, 4, 3, 1, 16, nullptr));
}

TEST(Membership, SegmentNotDivisibleByDilationUsesGlobalResidues) {
  // w = 5, r = 2, o = 0: segment 1 is rows 5..9; its rows = 0 mod 2 are 6, 8.
  Pattern p;
  p.kind = PatternKind::Dilated;
  p.segment = 5;
  p.dilation = 2;
  std::vector<int64_t> keys;
  for (int64_t j = 0; j < 12; ++j)
    if (patternContains(p, 0, 6, j, 12, nullptr))
      keys.push_back(j);
  EXPECT_EQ(keys, (std::vector<int64_t>{6, 8}));
}

TEST(Membership, WindowGlobalAndBlocks) {
  Pattern w;
  w.kind = PatternKind::Window;
  w.left = 2;
  w.right = 1;
  EXPECT_TRUE(patternContains(w, 0, 10, 8, 20, nullptr));
  EXPECT_TRUE(patternContains(w, 0, 10, 11, 20, nullptr));
  EXPECT_FALSE(patternContains(w, 0, 10, 7, 20, nullptr));
  EXPECT_FALSE(patternContains(w, 0, 10, 12, 20, nullptr));
  Pattern g;
  g.kind = PatternKind::Global;
  g.tokens = 3;
  EXPECT_TRUE(patternContains(g, 0, 10, 2, 20, nullptr));  // key is global
  EXPECT_TRUE(patternContains(g, 0, 1, 19, 20, nullptr));  // query is global
  EXPECT_FALSE(patternContains(g, 0, 10, 3, 20, nullptr));
  Pattern db;
  db.kind = PatternKind::DilatedBlocks;
  db.block = 16;
  db.rates = {2};
  EXPECT_TRUE(patternContains(db, 0, 40, 0, 64, nullptr));   // I=2, J=0
  EXPECT_TRUE(patternContains(db, 0, 40, 33, 64, nullptr));  // same block
  EXPECT_FALSE(patternContains(db, 0, 40, 16, 64, nullptr)); // J-I = -1
  Pattern h;
  h.kind = PatternKind::Hierarchical;
  h.block = 16;
  h.levels = 2; // level 0: |I-J| <= 1; level 1: J even, |I/2 - J/2| <= 1
  EXPECT_TRUE(patternContains(h, 0, 5 * 16, 4 * 16, 256, nullptr));
  EXPECT_TRUE(patternContains(h, 0, 5 * 16, 2 * 16, 256, nullptr));  // J=2: groups 2 vs 1
  EXPECT_FALSE(patternContains(h, 0, 5 * 16, 3 * 16, 256, nullptr)); // J odd, |5-3| > 1
  EXPECT_FALSE(patternContains(h, 0, 5 * 16, 0, 256, nullptr));      // groups 2 vs 0
}

TEST(Membership, RandomDensityIsRoughlyKept) {
  Pattern p;
  p.kind = PatternKind::Random;
  p.block = 16;
  p.density = 0.25;
  p.seed = 99;
  int kept = 0, total = 0;
  for (int64_t I = 0; I < 64; ++I)
    for (int64_t J = 0; J < 64; ++J, ++total)
      kept += patternContains(p, 3, I * 16, J * 16, 1024, nullptr);
  EXPECT_NEAR(kept / double(total), 0.25, 0.03);
  // A function of (seed, head, I, J) only: the same blocks at another
  // sequence length and at other rows of the same blocks agree; another
  // head or seed gives another mask.
  int sameAcrossN = 0, otherHead = 0, otherSeed = 0;
  Pattern reseeded = p;
  reseeded.seed = 100;
  for (int64_t I = 0; I < 32; ++I)
    for (int64_t J = 0; J < 32; ++J) {
      const bool kept = patternContains(p, 3, I * 16, J * 16, 512, nullptr);
      sameAcrossN += kept == patternContains(p, 3, I * 16 + 15, J * 16 + 7, 1024, nullptr);
      otherHead += kept != patternContains(p, 4, I * 16, J * 16, 512, nullptr);
      otherSeed += kept != patternContains(reseeded, 3, I * 16, J * 16, 512, nullptr);
    }
  EXPECT_EQ(sameAcrossN, 32 * 32);
  EXPECT_GT(otherHead, 32 * 32 / 8); // independent masks at density 1/4 differ in ~3/8
  EXPECT_GT(otherSeed, 32 * 32 / 8);
}

TEST(Reference, DenseMatchesNaiveSoftmax) {
  AttentionSpec s = parseOne("attention t { heads = 2 head_dim = 32 branch { dense } }");
  const int64_t n = 9;
  auto q = randomVector(n * 2 * 32, 1), k = randomVector(n * 2 * 32, 2),
       v = randomVector(n * 2 * 32, 3);
  Outputs r = forward(s, n, q, k, v);
  const double scale = 1 / std::sqrt(32.0);
  for (int h = 0; h < 2; ++h)
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> p(n);
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int d = 0; d < 32; ++d)
          dot += double(q[(i * 2 + h) * 32 + d]) * k[(j * 2 + h) * 32 + d];
        p[j] = dot * scale;
        m = std::max(m, p[j]);
      }
      for (auto &x : p)
        sum += (x = std::exp(x - m));
      EXPECT_NEAR(r.lse[h * n + i], m + std::log(sum), 1e-5);
      for (int d = 0; d < 32; ++d) {
        double o = 0;
        for (int64_t j = 0; j < n; ++j)
          o += p[j] / sum * v[(j * 2 + h) * 32 + d];
        EXPECT_NEAR(r.out[(i * 2 + h) * 32 + d], o, 1e-5);
      }
    }
}

TEST(Reference, TwoIdenticalBranchesCountKeysTwice) {
  // The multiset union: the same key set twice gives the same O (weights
  // double uniformly) and an LSE larger by exactly log 2.
  AttentionSpec one = parseOne(
      "attention t { heads = 1 head_dim = 32 branch { window(left = 3, right = 0) } }");
  AttentionSpec two = parseOne("attention t { heads = 1 head_dim = 32 "
                               "branch { window(left = 3, right = 0) } "
                               "branch { window(left = 3, right = 0) } }");
  const int64_t n = 12;
  auto q = randomVector(n * 32, 4), k = randomVector(n * 32, 5), v = randomVector(n * 32, 6);
  Outputs a = forward(one, n, q, k, v), b = forward(two, n, q, k, v);
  for (size_t x = 0; x < a.out.size(); ++x)
    EXPECT_NEAR(a.out[x], b.out[x], 1e-6);
  for (size_t x = 0; x < a.lse.size(); ++x)
    EXPECT_NEAR(b.lse[x] - a.lse[x], std::log(2.0), 1e-5);
}

TEST(Reference, OverlappingBranchesEqualOneSoftmaxOverTheMultiset) {
  // Branches {0..4} and {3..7} of row 7 (window left 4 and a global prefix of
  // 8 keys under causal): keys 3 and 4 count twice in one softmax.
  AttentionSpec s = parseOne("attention t { heads = 1 head_dim = 32 causal = true "
                             "branch { window(left = 4, right = 0) } "
                             "branch { global(tokens = 5) } }");
  const int64_t n = 8;
  auto q = randomVector(n * 32, 7), k = randomVector(n * 32, 8), v = randomVector(n * 32, 9);
  Outputs r = forward(s, n, q, k, v);
  const int64_t i = 7;
  std::vector<int64_t> multiset = {3, 4, 5, 6, 7, 0, 1, 2, 3, 4};
  double m = -INFINITY, sum = 0;
  std::vector<double> p;
  for (int64_t j : multiset) {
    double dot = 0;
    for (int d = 0; d < 32; ++d)
      dot += double(q[i * 32 + d]) * k[j * 32 + d];
    p.push_back(dot / std::sqrt(32.0));
    m = std::max(m, p.back());
  }
  for (auto &x : p)
    sum += (x = std::exp(x - m));
  EXPECT_NEAR(r.lse[i], m + std::log(sum), 1e-5);
  for (int d = 0; d < 32; ++d) {
    double o = 0;
    for (size_t t = 0; t < multiset.size(); ++t)
      o += p[t] / sum * v[multiset[t] * 32 + d];
    EXPECT_NEAR(r.out[i * 32 + d], o, 1e-5);
  }
}

TEST(Reference, EmptyRowsGiveZeroAndMinusInfinity) {
  // dilation 2, offset 0: odd rows have no keys at all.
  AttentionSpec s = parseOne("attention t { heads = 1 head_dim = 32 "
                             "branch { dilated(segment = 4, dilation = 2, offset = 0) } }");
  const int64_t n = 6;
  auto q = randomVector(n * 32, 1), k = randomVector(n * 32, 2), v = randomVector(n * 32, 3);
  Outputs r = forward(s, n, q, k, v);
  for (int64_t i = 1; i < n; i += 2) {
    EXPECT_TRUE(std::isinf(r.lse[i]) && r.lse[i] < 0) << "row " << i;
    for (int d = 0; d < 32; ++d)
      EXPECT_EQ(r.out[i * 32 + d], 0.0f);
  }
  for (int64_t i = 0; i < n; i += 2)
    EXPECT_TRUE(std::isfinite(r.lse[i]));
}

TEST(Reference, GqaReadsSharedKvHeads) {
  // heads 4 over kv_heads 2 equals heads 4 over 4 kv heads where heads
  // (0,1) and (2,3) see copies of the same K and V.
  AttentionSpec gqa = parseOne("attention t { heads = 4 kv_heads = 2 head_dim = 32 "
                               "branch { window(left = 2, right = 2) } }");
  AttentionSpec mha = parseOne("attention t { heads = 4 head_dim = 32 "
                               "branch { window(left = 2, right = 2) } }");
  const int64_t n = 10;
  auto q = randomVector(n * 4 * 32, 1), k2 = randomVector(n * 2 * 32, 2),
       v2 = randomVector(n * 2 * 32, 3);
  std::vector<float> k4(n * 4 * 32), v4(n * 4 * 32);
  for (int64_t j = 0; j < n; ++j)
    for (int h = 0; h < 4; ++h)
      for (int d = 0; d < 32; ++d) {
        k4[(j * 4 + h) * 32 + d] = k2[(j * 2 + h / 2) * 32 + d];
        v4[(j * 4 + h) * 32 + d] = v2[(j * 2 + h / 2) * 32 + d];
      }
  Outputs a = forward(gqa, n, q, k2, v2), b = forward(mha, n, q, k4, v4);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.lse, b.lse);
}

TEST(Reference, CausalIsGlobalRowOrder) {
  AttentionSpec s = parseOne("attention t { heads = 1 head_dim = 32 causal = true "
                             "branch { dense } }");
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 6; ++j)
      EXPECT_EQ(branchContains(s, s.branches[0], 0, i, j, 6, nullptr), j <= i);
}

TEST(Reference, BlockMaskIsRequiredAndValidated) {
  AttentionSpec s = parseOne("attention t { heads = 1 head_dim = 32 "
                             "branch { block_mask(block = 16) } }");
  std::vector<float> x(40 * 32, 1.0f), out(40 * 32), lse(40);
  EXPECT_THROW(referenceForward(s, 1, 40, x.data(), x.data(), x.data(), nullptr, out.data(),
                                lse.data()),
               ArgumentError);
  BlockMask bad;
  bad.block = 16;
  bad.rowOffsets = {0, 1, 1}; // N = 40 needs 3 query blocks: 4 offsets
  bad.colIndices = {0};
  try {
    referenceForward(s, 1, 40, x.data(), x.data(), x.data(), &bad, out.data(), lse.data());
    FAIL() << "a malformed mask was accepted";
  } catch (const ArgumentError &e) {
    EXPECT_NE(std::string(e.what()).find("ceil(N / block) + 1 = 4"), std::string::npos)
        << e.what();
  }
  bad.rowOffsets = {0, 1, 1, 2};
  bad.colIndices = {0, 7};
  EXPECT_THROW(bad.validate(40), ArgumentError);
  bad.colIndices = {0, 2};
  EXPECT_NO_THROW(bad.validate(40));
}

TEST(Reference, CountsAttendedPairs) {
  AttentionSpec s = parseOne("attention t { heads = 2 head_dim = 32 causal = true "
                             "branch { dense } branch heads 1 { global(tokens = 1) } }");
  // causal dense: n(n+1)/2 per head; global(1) under causal on head 1: every
  // row sees key 0 (n pairs).
  EXPECT_EQ(countAttendedPairs(s, 3, 10, nullptr), 3 * (2 * 55 + 10));
}

} // namespace
} // namespace dattn::test
