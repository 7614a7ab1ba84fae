// forChunks: a large host loop over [0, count) split across the machine's
// threads (input drawing, dtype conversion of whole tensors: at 256K rows a
// tensor is hundreds of millions of elements). Not for anything small.
#pragma once

#include <algorithm>
#include <cstddef>
#include <system_error>
#include <thread>
#include <vector>

namespace dattn::rt {

/// Calls fn(begin, end) on consecutive chunks of [0, count), one per
/// hardware thread but at least `minChunk` long, boundaries multiples of
/// `align`; this thread runs the first chunk, and any chunk no thread can
/// be had for. Returns when all are done.
template <class Fn>
void forChunks(size_t count, size_t minChunk, size_t align, const Fn &fn) {
  const size_t threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 64);
  size_t chunk = std::max(minChunk, count / threads + 1);
  chunk = (chunk + align - 1) / align * align;
  std::vector<std::thread> pool;
  for (size_t b = chunk; b < count; b += chunk) {
    const size_t e = std::min(count, b + chunk);
    try {
      pool.emplace_back([&fn, b, e] { fn(b, e); });
    } catch (const std::system_error &) {
      fn(b, e);
    }
  }
  fn(size_t(0), std::min(count, chunk));
  for (std::thread &t : pool)
    t.join();
}

} // namespace dattn::rt
