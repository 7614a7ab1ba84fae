// dattn: every environment variable dattn reads, in one place.
//
//   DATTN_CACHE_DIR   kernel cache folder (default ~/.cache/dattn)
//   DATTN_VERBOSE     1: one line per compiled attention on stderr
//   CUDA_HOME         where to look first for libnvrtc (CUDA toolkit root)
//   DATTN_NVRTC12     libnvrtc.so.12 or its folder: the NVRTC for GPUs older
//                     than sm_75 (default: the nvidia-cuda-nvrtc-cu12 wheel
//                     found at build time, then the usual places)
//   DATTN_TUNING_DB   the user's tuning database (default <cache>/tuning.json)
//   DATTN_TUNING_SHIPPED the shipped tuning databases' folder (default: the
//                     source tree's autotune/db, or installed
//                     <prefix>/share/dattn/tuning)
//   DATTN_RING_TIMEOUT seconds a ring rank waits for a peer before it aborts
//                     its communicator (default 60)
//   DATTN_FAMILIES    kernel families (comma-separated names, as `dattn
//                     compile --emit=kernels` prints them) tried before the
//                     preference order, where they support the branch: to
//                     run a family that is not the default (tests, trials)
//   DATTN_SPLIT_UNIONS 0: a union's dilated member stays in the union (the
//                     default splits it into its own strided branch:
//                     dattn-split-unions)
//   DATTN_BRANCH_STREAMS 0: the branch kernels of an attention whose heads
//                     are each in one branch run one after another on the
//                     caller's stream (the default runs them side by side
//                     on streams of their own, runtime/BranchStreams.h).
//                     Read when an attention is compiled.
//   DATTN_SPLIT_WAVES CTAs an SM at which the backward's split of every key
//                     tile's query walk stops (default 8, rt::kSplitWaves;
//                     runtime/Launch.h): for trials. Read when an attention
//                     is compiled.
#pragma once

#include <string>
#include <vector>

namespace dattn::env {

/// DATTN_CACHE_DIR, else $XDG_CACHE_HOME/dattn, else $HOME/.cache/dattn.
std::string cacheRoot();
bool verbose();
/// CUDA_HOME or CUDA_PATH, or nullptr.
const char *cudaHome();
/// DATTN_NVRTC12, or nullptr.
const char *nvrtc12();
/// DATTN_TUNING_DB, else cacheRoot() + "/tuning.json".
std::string tuningDatabase();
/// DATTN_TUNING_SHIPPED, else the source tree's autotune/db if it exists,
/// else <the library's folder>/../share/dattn/tuning.
std::string shippedTuningFolder();
/// DATTN_RING_TIMEOUT in seconds (default 60); throws Error if it is not a
/// positive number.
double ringTimeoutSeconds();
/// DATTN_FAMILIES split at commas (empty: the preference order alone).
std::vector<std::string> preferredFamilies();
/// PlanOptions::splitUnions: true unless DATTN_SPLIT_UNIONS is "0".
bool splitUnions();
/// true unless DATTN_BRANCH_STREAMS is "0".
bool branchStreams();
/// DATTN_SPLIT_WAVES (1 to 1024), or 0 if unset; throws Error otherwise.
int splitWaves();

} // namespace dattn::env
