// reference: a minimal parallel loop for the reference computations.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace dattn {

/// Runs body(index) for index in [0, count) on `threads` threads.
template <class Body> inline void parallelFor(int64_t count, int threads, Body body) {
  if (threads <= 0)
    threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<int64_t>(threads, count));
  if (threads <= 1) {
    for (int64_t k = 0; k < count; ++k)
      body(k);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int64_t k = t; k < count; k += threads)
        body(k);
    });
  for (auto &th : pool)
    th.join();
}

} // namespace dattn
