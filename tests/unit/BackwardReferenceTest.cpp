// The reference gradients against central finite differences of the
// reference forward, on tiny shapes: multiset overlaps, causal, GQA, dilated
// rows with no keys, random specs.
#include "RandomSpec.h"

#include <gtest/gtest.h>

#include <cmath>

namespace dattn::test {
namespace {

AttentionSpec parseOne(const std::string &text) {
  ParseResult r = parseSpec(text, "bwd.dattn");
  EXPECT_TRUE(r.ok()) << r.formatDiagnostics();
  return r.ok() ? r.file.attentions.at(0) : AttentionSpec{};
}

struct Problem {
  AttentionSpec spec;
  int64_t batch, n;
  std::vector<float> q, k, v, dout;
  BlockMask mask;
  const BlockMask *maskPtr = nullptr;
};

Problem makeProblem(const AttentionSpec &spec, int64_t batch, int64_t n, uint64_t seed) {
  Problem pr{spec, batch, n, {}, {}, {}, {}, {}, nullptr};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  pr.q.resize(batch * n * spec.heads * spec.headDim);
  pr.k.resize(batch * n * spec.kvHeads * spec.headDim);
  pr.v.resize(pr.k.size());
  pr.dout.resize(pr.q.size());
  for (auto *x : {&pr.q, &pr.k, &pr.v, &pr.dout})
    for (float &f : *x)
      f = normal(rng);
  if (spec.needsBlockMask()) {
    SpecGenerator gen(seed);
    pr.mask = gen.mask(spec, n);
    pr.maskPtr = &pr.mask;
  }
  return pr;
}

/// Loss = sum(dO * O), in double from the reference forward.
double loss(const Problem &pr) {
  std::vector<float> out(pr.q.size()), lse(pr.batch * pr.spec.heads * pr.n);
  referenceForward(pr.spec, pr.batch, pr.n, pr.q.data(), pr.k.data(), pr.v.data(), pr.maskPtr,
                   out.data(), lse.data(), 1);
  double l = 0;
  for (size_t x = 0; x < out.size(); ++x)
    l += double(pr.dout[x]) * out[x];
  return l;
}

/// Central differences on `samples` random entries of q, k and v.
void expectGradientsMatch(Problem pr, int samples, uint64_t seed) {
  std::vector<float> dq(pr.q.size()), dk(pr.k.size()), dv(pr.v.size());
  referenceBackward(pr.spec, pr.batch, pr.n, pr.q.data(), pr.k.data(), pr.v.data(),
                    pr.dout.data(), pr.maskPtr, dq.data(), dk.data(), dv.data());
  for (const auto *g : {&dq, &dk, &dv})
    for (float x : *g)
      ASSERT_FALSE(std::isnan(x));
  std::mt19937_64 rng(seed);
  struct Target {
    std::vector<float> *x;
    const std::vector<float> *grad;
    const char *name;
  } targets[] = {{&pr.q, &dq, "dq"}, {&pr.k, &dk, "dk"}, {&pr.v, &dv, "dv"}};
  for (int s = 0; s < samples; ++s) {
    Target &t = targets[s % 3];
    size_t idx = rng() % t.x->size();
    const float orig = (*t.x)[idx];
    const float eps = 1e-2f;
    (*t.x)[idx] = orig + eps;
    const double up = loss(pr);
    const float realUp = (*t.x)[idx] - orig;
    (*t.x)[idx] = orig - eps;
    const double down = loss(pr);
    const float realDown = orig - (*t.x)[idx];
    (*t.x)[idx] = orig;
    const double fd = (up - down) / (double(realUp) + realDown);
    const double g = (*t.grad)[idx];
    EXPECT_NEAR(g, fd, 2e-3 + 5e-3 * std::fabs(fd))
        << t.name << "[" << idx << "]\n"
        << pr.spec.canonical();
  }
}

TEST(ReferenceBackward, OverlappingBranchesCausalGqa) {
  AttentionSpec s = parseOne("attention t { heads = 4 kv_heads = 2 head_dim = 32 causal = true "
                             "branch { window(left = 3, right = 0) } "
                             "branch heads 1..2 { global(tokens = 4) | window(left = 1, right = 0) } }");
  expectGradientsMatch(makeProblem(s, 2, 11, 1), 240, 2);
}

TEST(ReferenceBackward, DilatedRowsWithoutKeysHaveZeroGradients) {
  AttentionSpec s = parseOne("attention t { heads = 2 head_dim = 32 "
                             "branch { dilated(segment = 6, dilation = 3, offset = head) } }");
  Problem pr = makeProblem(s, 1, 13, 3);
  std::vector<float> dq(pr.q.size()), dk(pr.k.size()), dv(pr.v.size());
  referenceBackward(s, 1, 13, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), nullptr,
                    dq.data(), dk.data(), dv.data());
  for (int64_t i = 0; i < 13; ++i)
    for (int h = 0; h < 2; ++h)
      if (i % 3 != h % 3)
        for (int d = 0; d < 32; ++d) {
          EXPECT_EQ(dq[(i * 2 + h) * 32 + d], 0.0f); // no keys: no gradient
          EXPECT_EQ(dk[(i * 2 + h) * 32 + d], 0.0f); // no query reaches it
        }
  expectGradientsMatch(pr, 150, 4);
}

TEST(ReferenceBackward, DuplicatedBranchGivesTheSameGradients) {
  // Every key counted twice: the same softmax, so the same gradients.
  AttentionSpec one = parseOne("attention t { heads = 1 head_dim = 32 "
                               "branch { window(left = 2, right = 2) } }");
  AttentionSpec two = parseOne("attention t { heads = 1 head_dim = 32 "
                               "branch { window(left = 2, right = 2) } "
                               "branch { window(left = 2, right = 2) } }");
  Problem a = makeProblem(one, 1, 9, 5), b = makeProblem(two, 1, 9, 5);
  std::vector<float> dq1(a.q.size()), dk1(a.k.size()), dv1(a.v.size()), dq2(a.q.size()),
      dk2(a.k.size()), dv2(a.v.size());
  referenceBackward(one, 1, 9, a.q.data(), a.k.data(), a.v.data(), a.dout.data(), nullptr,
                    dq1.data(), dk1.data(), dv1.data());
  referenceBackward(two, 1, 9, b.q.data(), b.k.data(), b.v.data(), b.dout.data(), nullptr,
                    dq2.data(), dk2.data(), dv2.data());
  for (size_t x = 0; x < dq1.size(); ++x) {
    EXPECT_NEAR(dq1[x], dq2[x], 1e-5);
    EXPECT_NEAR(dk1[x], dk2[x], 1e-5);
    EXPECT_NEAR(dv1[x], dv2[x], 1e-5);
  }
}

TEST(ReferenceBackward, RandomSpecs) {
  SpecGenerator gen(31);
  for (int trial = 0; trial < 12; ++trial) {
    AttentionSpec s = gen.spec();
    s.headDim = 32;
    int64_t n = gen.uniform(2, 24);
    SCOPED_TRACE("trial " + std::to_string(trial));
    expectGradientsMatch(makeProblem(s, 1, n, trial), 60, trial);
  }
}

} // namespace
} // namespace dattn::test
