// dattn: every environment variable dattn reads, in one place.
//
//   DATTN_CACHE_DIR   kernel cache folder (default ~/.cache/dattn)
//   DATTN_VERBOSE     1: one line per compiled attention on stderr
//   CUDA_HOME         where to look first for libnvrtc (CUDA toolkit root)
#pragma once

#include <string>

namespace dattn::env {

/// DATTN_CACHE_DIR, else $XDG_CACHE_HOME/dattn, else $HOME/.cache/dattn.
std::string cacheRoot();
bool verbose();
/// CUDA_HOME or CUDA_PATH, or nullptr.
const char *cudaHome();

} // namespace dattn::env
