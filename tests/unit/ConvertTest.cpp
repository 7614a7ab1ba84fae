// encode/decode of whole tensors (split across host threads above 1M
// elements): every element as converted alone, for each 16-bit dtype, on
// an array spanning several chunks, specials included.
#include "dattn/host.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace dattn {
namespace {

TEST(Convert, WholeTensorsEqualElementByElement) {
  std::vector<float> x = randomNormal(3'000'003, 3, 0);
  x[1'500'000] = std::numeric_limits<float>::infinity();
  x[2'999'999] = std::numeric_limits<float>::quiet_NaN();
  x[7] = 1e-7f; // a half subnormal
  for (DType t : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(static_cast<int>(t));
    const std::vector<char> all = encode(x.data(), x.size(), t);
    std::vector<float> back(x.size());
    decode(all.data(), x.size(), t, back.data());
    for (size_t i = 0; i < x.size(); i += (i % 1'000'000 < 64 ? 1 : 997)) {
      const std::vector<char> one = encode(&x[i], 1, t);
      ASSERT_EQ(std::memcmp(one.data(), all.data() + 2 * i, 2), 0) << i;
      float alone;
      decode(one.data(), 1, t, &alone);
      ASSERT_TRUE(alone == back[i] || (std::isnan(alone) && std::isnan(back[i]))) << i;
    }
    // The last element, whichever chunk holds it.
    const std::vector<char> last = encode(&x.back(), 1, t);
    EXPECT_EQ(std::memcmp(last.data(), all.data() + 2 * (x.size() - 1), 2), 0);
  }
}

} // namespace
} // namespace dattn
