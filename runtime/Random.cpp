// randomNormal (include/dattn/host.h): counter-based, so element i depends
// only on (seed, stream, i) and threads that fill disjoint ranges give the
// array one thread would. The benchmarks draw billions of inputs at long
// sequence lengths; a sequential std::normal_distribution took minutes of
// GPU-machine time for them.
#include "Parallel.h"

#include "dattn/host.h"

#include <algorithm>
#include <cmath>

namespace dattn {

namespace {

/// splitmix64's finalizer: a bijective 64-bit mix.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Elements [begin, end) (begin even): pair j = (2j, 2j + 1) by Box-Muller
/// from two 24-bit uniforms of one hash (float math: these are test
/// inputs, and the tail beyond 5.8 sigma that 24 bits cut off is 1e-8).
void fill(float *out, size_t begin, size_t end, uint64_t key) {
  constexpr float kTwoPi = 6.28318530718f, kInv24 = 1.0f / 16777216.0f;
  for (size_t i = begin; i < end; i += 2) {
    const uint64_t h = mix(key + i / 2);
    const float u1 = (float(h & 0xffffff) + 1.0f) * kInv24; // (0, 1]: log is finite
    const float u2 = float((h >> 32) & 0xffffff) * kInv24;
    const float r = std::sqrt(-2.0f * std::log(u1));
    out[i] = r * std::cos(kTwoPi * u2);
    if (i + 1 < end)
      out[i + 1] = r * std::sin(kTwoPi * u2);
  }
}

} // namespace

std::vector<float> randomNormal(size_t count, uint64_t seed, uint64_t stream) {
  std::vector<float> out(count);
  const uint64_t key = mix(mix(seed) ^ (stream * 0x100000001b3ULL));
  // Even chunk boundaries keep every pair inside one chunk.
  rt::forChunks(count, size_t(1) << 20, 2,
                [&](size_t b, size_t e) { fill(out.data(), b, e, key); });
  return out;
}

} // namespace dattn
