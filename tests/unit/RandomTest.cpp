// randomNormal: the same values for a seed and stream whatever the array
// length and the threads that filled it, other values for another stream,
// and moments of a standard normal.
#include "dattn/host.h"

#include <gtest/gtest.h>

#include <cmath>

namespace dattn {
namespace {

TEST(RandomNormal, ElementsDependOnlyOnSeedStreamAndIndex) {
  // 3M elements span several threads' chunks (1M each at least); the short
  // array is filled by one thread.
  const std::vector<float> big = randomNormal(3'000'001, 7, 2), small = randomNormal(1001, 7, 2);
  for (size_t i = 0; i < small.size(); ++i)
    ASSERT_EQ(big[i], small[i]) << i;
  const std::vector<float> tail = randomNormal(3'000'001, 7, 2);
  EXPECT_EQ(big, tail);
  const std::vector<float> other = randomNormal(1001, 7, 3), reseeded = randomNormal(1001, 8, 2);
  int same = 0;
  for (size_t i = 0; i < small.size(); ++i)
    same += (other[i] == small[i]) + (reseeded[i] == small[i]);
  EXPECT_LT(same, 3);
}

TEST(RandomNormal, LooksStandardNormal) {
  const std::vector<float> x = randomNormal(2'000'000, 1, 0);
  double sum = 0, sq = 0, fourth = 0;
  size_t beyond3 = 0;
  for (float v : x) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sq += double(v) * v;
    fourth += double(v) * v * v * v;
    beyond3 += std::fabs(v) > 3;
  }
  const double n = double(x.size()), mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 3e-3);
  EXPECT_NEAR(var, 1.0, 5e-3);
  EXPECT_NEAR(fourth / n, 3.0, 3e-2);      // the normal's kurtosis
  EXPECT_NEAR(beyond3 / n, 0.0027, 4e-4); // P(|x| > 3)
}

} // namespace
} // namespace dattn
