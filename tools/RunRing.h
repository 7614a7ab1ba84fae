// tools: `dattn run --ranks P [--loopback]` (RunRing.cpp), called by `dattn run`.
#pragma once

#include "Options.h"

#include "dattn/reference.h"
#include "dattn/spec.h"

#include <vector>

namespace dattn::tools {

/// The random streams of `dattn run --seed S` (randomNormal): q, k and v
/// are streams 0, 1 and 2, dout this one, on one GPU, in a ring and on the CPU.
constexpr uint64_t kDoutStream = 3;
/// --seed (default 0), read in one place for every random input.
inline uint64_t seedOption(const Options &o) {
  return static_cast<uint64_t>(o.getInt("seed", 0, 0, int64_t(1) << 62));
}

int runRing(const Options &o, const AttentionSpec &spec, int64_t batch, int64_t n,
                    const std::vector<float> &q, const std::vector<float> &k,
                    const std::vector<float> &v, const BlockMask *mask);

} // namespace dattn::tools
