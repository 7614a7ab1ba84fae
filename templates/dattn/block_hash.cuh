// dattn: the hash that decides which block pairs a `random` pattern keeps.
//
// It is part of the language's semantics (docs/spec-language.md), so host
// code (the CPU reference, plan tests) and device code (kernels) include this
// one definition. Plain C++ that compiles under nvcc, NVRTC and g++.
#pragma once

#ifndef DATTN_HD
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define DATTN_HD __host__ __device__ __forceinline__
#else
#define DATTN_HD inline
#endif
#endif

namespace dattn {

/// splitmix64's finalizer: a bijective mix with full avalanche, so nearby
/// (seed, head, I, J) tuples give independent-looking values.
DATTN_HD unsigned long long mix64(unsigned long long z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// A 32-bit value per (seed, query head, query block I, key block J). The
/// pair is kept iff blockHash(...) < keepThreshold, with
/// keepThreshold = round(density * 2^32) computed once on the host.
DATTN_HD unsigned int blockHash(unsigned long long seed, unsigned int head,
                                unsigned int qBlock, unsigned int kBlock) {
  unsigned long long z = mix64(seed + 0x9e3779b97f4a7c15ULL * (head + 1ULL));
  z = mix64(z ^ ((unsigned long long)qBlock << 32 | kBlock));
  return (unsigned int)(z >> 32);
}

} // namespace dattn
