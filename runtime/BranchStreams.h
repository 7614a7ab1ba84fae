// runtime: a module's independent branch kernels side by side. When each
// head is in one branch (EmittedModule::branchesIndependent), the branch
// kernels touch disjoint rows, and launched one after another on one
// stream each leaves its last wave part empty while the next waits: on
// the head-partitioned LongNet at 64K three tails of 3.9, 7.8 and 15.5
// waves of one CTA an SM, about 3% of the forward. On side streams the
// next branch's CTAs fill the SMs the previous one's tail leaves.
//
// The caller's stream forks to the side streams through an event and
// joins them back before anything later on it runs, so the caller sees
// one stream's order. On by default (DATTN_BRANCH_STREAMS=0 turns it off,
// env.h): on the H100 it took that forward at 64K from 501-505 to 516
// TFLOP/s (docs/perf-notes.md); off while the caller's stream is being
// captured into a CUDA graph (the side streams would stay in the capture).
#pragma once

#include "dattn/emit.h"

#include <functional>
#include <mutex>
#include <vector>

namespace dattn::rt {

/// Side streams an attention makes at most (its branches beyond go round
/// robin; LongNet's configurations have 3 to 5 branches).
constexpr int kMaxSideStreams = 3;

/// A branch's kernels in a module: `count` kernels from index `first`.
struct KernelGroup {
  int first = 0, count = 0;
};
/// The module's branch kernels (KernelInfo::branch >= 0, contiguous in the
/// module, a branch's kernels next to each other) grouped by branch, in
/// module order.
std::vector<KernelGroup> branchKernelGroups(const EmittedModule &m);

class BranchStreams {
public:
  /// `sideStreams` streams and their events, in the current context.
  explicit BranchStreams(int sideStreams);
  ~BranchStreams();
  BranchStreams(const BranchStreams &) = delete;
  BranchStreams &operator=(const BranchStreams &) = delete;

  /// Enqueues `launch(group, stream)` for every group in [0, groups):
  /// group g on the caller's `stream` or a side stream (round robin), all
  /// ordered after the work already on `stream` and before what comes
  /// after on it. A group's launches stay in order on one stream. Groups
  /// go one after another on `stream` where there is one group, no side
  /// stream, or `stream` is capturing. Thread-safe (one fan-out at a time:
  /// the events are shared). If a launch throws, the side streams are
  /// still joined, then the error propagates.
  void run(void *stream, int groups, const std::function<void(int, void *)> &launch) const;

  /// run() on `streams`, or every group in order on `stream` where there
  /// are none (branch streams off, or a module whose branches share heads).
  static void run(const BranchStreams *streams, void *stream, int groups,
                  const std::function<void(int, void *)> &launch);

private:
  void release(); ///< destroys the streams and events (their pending work still completes)
  std::vector<void *> streams_; ///< CUstream, non-blocking
  void *fork_ = nullptr;        ///< CUevent recorded on the caller's stream
  std::vector<void *> joins_;   ///< CUevent per side stream
  mutable std::mutex mutex_;
};

} // namespace dattn::rt
