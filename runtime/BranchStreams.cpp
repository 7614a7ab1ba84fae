#include "BranchStreams.h"

#include "Libraries.h"

#include <algorithm>

namespace dattn::rt {

std::vector<KernelGroup> branchKernelGroups(const EmittedModule &m) {
  std::vector<KernelGroup> groups;
  for (int x = 0; x < static_cast<int>(m.kernels.size()); ++x) {
    const int branch = m.kernels[x].branch;
    if (branch < 0)
      continue;
    if (!groups.empty() && m.kernels[groups.back().first].branch == branch)
      ++groups.back().count;
    else
      groups.push_back({x, 1});
  }
  return groups;
}

BranchStreams::BranchStreams(int sideStreams) {
  const Driver &d = driver();
  try {
    check(d.eventCreate(reinterpret_cast<CUevent *>(&fork_), CU_EVENT_DISABLE_TIMING),
          "branch streams: creating an event");
    for (int s = 0; s < sideStreams; ++s) {
      CUstream stream = nullptr;
      check(d.streamCreate(&stream, CU_STREAM_NON_BLOCKING), "branch streams: creating a stream");
      streams_.push_back(stream);
      CUevent join = nullptr;
      check(d.eventCreate(&join, CU_EVENT_DISABLE_TIMING), "branch streams: creating an event");
      joins_.push_back(join);
    }
  } catch (...) {
    release(); // what was created before the failure
    throw;
  }
}

BranchStreams::~BranchStreams() { release(); }

void BranchStreams::release() {
  const Driver &d = driver();
  for (void *s : streams_)
    d.streamDestroy(static_cast<CUstream>(s)); // waits for nothing: its work completes first
  for (void *e : joins_)
    d.eventDestroy(static_cast<CUevent>(e));
  if (fork_)
    d.eventDestroy(static_cast<CUevent>(fork_));
  streams_.clear();
  joins_.clear();
  fork_ = nullptr;
}

void BranchStreams::run(const BranchStreams *streams, void *stream, int groups,
                        const std::function<void(int, void *)> &launch) {
  if (streams) {
    streams->run(stream, groups, launch);
    return;
  }
  for (int g = 0; g < groups; ++g)
    launch(g, stream);
}

void BranchStreams::run(void *stream, int groups,
                        const std::function<void(int, void *)> &launch) const {
  const Driver &d = driver();
  CUstream caller = static_cast<CUstream>(stream);
  int side = std::min<int>(groups - 1, static_cast<int>(streams_.size()));
  // A capturing stream would pull the side streams into its graph, where a
  // later run from another thread could join them too. A failed query (the
  // legacy stream while another stream captures) runs on the caller's
  // stream as well: its launches report what is wrong.
  CUstreamCaptureStatus capturing = CU_STREAM_CAPTURE_STATUS_NONE;
  if (d.streamIsCapturing(caller, &capturing) != CUDA_SUCCESS ||
      capturing != CU_STREAM_CAPTURE_STATUS_NONE)
    side = 0;
  if (side <= 0) {
    for (int g = 0; g < groups; ++g)
      launch(g, stream);
    return;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  check(d.eventRecord(static_cast<CUevent>(fork_), caller), "branch streams: the fork");
  for (int s = 0; s < side; ++s)
    check(d.streamWaitEvent(static_cast<CUstream>(streams_[s]), static_cast<CUevent>(fork_), 0),
          "branch streams: the fork");
  auto join = [&] {
    for (int s = 0; s < side; ++s) {
      check(d.eventRecord(static_cast<CUevent>(joins_[s]), static_cast<CUstream>(streams_[s])),
            "branch streams: the join");
      check(d.streamWaitEvent(caller, static_cast<CUevent>(joins_[s]), 0),
            "branch streams: the join");
    }
  };
  try {
    for (int g = 0; g < groups; ++g) {
      const int lane = g % (side + 1); // 0: the caller's stream
      launch(g, lane == 0 ? stream : streams_[lane - 1]);
    }
  } catch (...) {
    try {
      join();
    } catch (...) {
      // The launch's error is the one to report.
    }
    throw;
  }
  join();
}

} // namespace dattn::rt
