// NcclRing (include/dattn/ring_runtime.h): this process's ranks of a ring,
// each a RankRun (runtime/RingRank.h) on its GPU, with NCCL send/recv on a
// communication stream per rank. Per step s (slot s % 2 of the two receive
// slots), with events between the streams:
//
//   compute: wait received[s]; pack(s + 1); record packed[s + 1];
//            attend(s) (backward: dK/dV partials); record attended[s]
//   comm:    wait packed[s + 1] and attended[s - 1] (its slot's last reader);
//            send/recv step s + 1; record received[s + 1]
//   backward only, after step s + 1's transfer was enqueued:
//   comm:    wait attended[s] and added[s - 1]; send the partials back,
//            receive ours; record returned[s]
//   compute: wait returned[s]; add them; record added[s]
//
// so step s + 1's blocks move while step s's are attended to. Passed along
// (RingSchedule::passAlong), step s + 1's transfer forwards slot s % 2's
// block; backward it carries the partials step s added, so it also waits
// for attended[s], and the only return is the last block's, home.
// Every rank
// issues the same sequence of groups, and a send is empty exactly when its
// receiver expects nothing, so NCCL's operations always pair up. The host
// then watches the transfers' events in order against DATTN_RING_TIMEOUT.
#include "Nccl.h"

#include "Context.h"
#include "Libraries.h"
#include "RingRank.h"

#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/ring_runtime.h"

#include <chrono>
#include <map>
#include <thread>

namespace dattn {

struct NcclRing::Member {
  std::unique_ptr<rt::RankRun> run;
  RingCommunicator *comm = nullptr;
  CUstream commStream = nullptr;
  /// [step]: events of the schedule above (index 0 unused).
  std::vector<CUevent> packed, received, attended, returned, added;

  ncclComm_t nccl() const { return static_cast<ncclComm_t>(comm->handle()); }

  ~Member() {
    try {
      rt::ContextScope scope(comm->context());
      const rt::Driver &d = rt::driver();
      for (auto *list : {&packed, &received, &attended, &returned, &added})
        for (CUevent e : *list)
          if (e)
            d.eventDestroy(e);
      if (commStream)
        d.streamDestroy(commStream);
    } catch (...) {
      // Destructors do not throw.
    }
  }
};

namespace {

void record(CUevent e, CUstream s) {
  rt::check(rt::driver().eventRecord(e, s), "ring: recording an event");
}
void waitFor(CUstream s, CUevent e) {
  rt::check(rt::driver().streamWaitEvent(s, e, 0), "ring: ordering the streams");
}

std::string rankName(const RingCommunicator &c) {
  return "rank " + std::to_string(c.rank()) + " of " + std::to_string(c.size()) + " (GPU " +
         std::to_string(c.device()) + ")";
}

} // namespace

NcclRing::NcclRing(std::vector<RingMember> members, int64_t batch, int64_t seqLen,
                   const BlockMask *mask)
    : members_(std::move(members)) {
  if (members_.empty())
    throw ArgumentError("ring: no members");
  const AttentionSpec &spec = members_[0].attention->spec();
  const int P = members_[0].comm->size();
  for (const RingMember &m : members_) {
    if (!m.attention || !m.comm)
      throw ArgumentError("ring: a member without an attention or a communicator");
    if (m.attention->spec().hash() != spec.hash())
      throw ArgumentError("ring: this process's members compiled different specs ('" +
                          spec.name + "' and '" + m.attention->spec().name + "')");
    if (m.comm->device() != m.attention->device())
      throw ArgumentError("ring: " + rankName(*m.comm) + " has its attention on GPU " +
                          std::to_string(m.attention->device()));
    if (m.comm->aborted())
      throw Error("ring: the communicator of " + rankName(*m.comm) + " was aborted");
    if (spec.needsBlockMask() && (!mask || !m.mask.present()))
      throw ArgumentError("ring (attention '" + spec.name +
                          "'): the spec has a block_mask pattern: pass the mask on the host "
                          "and on each member's GPU");
  }
  if (batch < 1)
    throw ArgumentError("ring (attention '" + spec.name + "'): the batch must be >= 1, got " +
                        std::to_string(batch));
  // The batch travels in the hash too: it sizes every transfer.
  const uint64_t agreed = spec.hash() * 1099511628211ULL ^ static_cast<uint64_t>(batch);
  plan_ = planRing(members_[0].attention->plan(), seqLen, P, mask, agreed);
  schedule_ = scheduleRing(plan_);

  for (const RingMember &m : members_) {
    auto s = std::make_unique<Member>();
    s->comm = m.comm;
    s->run = std::make_unique<rt::RankRun>(*m.attention, plan_, schedule_, m.comm->rank(), batch,
                                           m.mask);
    rt::ContextScope scope(m.comm->context());
    const rt::Driver &d = rt::driver();
    rt::check(d.streamCreate(&s->commStream, CU_STREAM_NON_BLOCKING),
              "ring: creating the communication stream");
    for (auto *list : {&s->packed, &s->received, &s->attended, &s->returned, &s->added}) {
      list->assign(P + 1, nullptr);
      for (CUevent &e : *list)
        rt::check(d.eventCreate(&e, CU_EVENT_DISABLE_TIMING), "ring: creating an event");
    }
    state_.push_back(std::move(s));
  }
  checkPlans();
}

NcclRing::~NcclRing() = default;

int64_t NcclRing::rows(int member) const { return state_.at(member)->run->rows(); }
int64_t NcclRing::workspaceBytes(int member) const {
  return state_.at(member)->run->workspaceBytes(false);
}
int64_t NcclRing::backwardWorkspaceBytes(int member) const {
  return state_.at(member)->run->workspaceBytes(true);
}

void NcclRing::abortAll() {
  aborted_ = true;
  for (RingMember &m : members_)
    m.comm->abort();
}

void NcclRing::group(const std::string &what, const std::function<void(Member &)> &post) {
  const comm::Nccl &n = comm::nccl();
  try {
    comm::check(n.groupStart(), "ring: ncclGroupStart");
    for (auto &s : state_) {
      rt::ContextScope scope(s->comm->context());
      post(*s);
    }
    comm::check(n.groupEnd(), "ring: " + what);
    // Non-blocking communicators may still be issuing the group.
    for (auto &s : state_) {
      const ncclResult_t r = comm::settle(s->nccl(), env::ringTimeoutSeconds());
      if (r == ncclInProgress)
        throw Error("ring: " + rankName(*s->comm) + ": NCCL did not issue " + what + " within " +
                    std::to_string(env::ringTimeoutSeconds()) + " s (DATTN_RING_TIMEOUT)");
      comm::check(r, "ring: " + rankName(*s->comm) + ": " + what);
    }
  } catch (...) {
    abortAll();
    throw;
  }
}

void NcclRing::watch(const Member &s, void *event, const std::string &what) {
  const CUevent e = static_cast<CUevent>(event);
  const double seconds = env::ringTimeoutSeconds();
  const double deadline = comm::now() + seconds;
  const rt::Driver &d = rt::driver();
  rt::ContextScope scope(s.comm->context());
  while (true) {
    const CUresult r = d.eventQuery(e);
    if (r == CUDA_SUCCESS)
      return;
    std::string failure;
    if (r != CUDA_ERROR_NOT_READY) {
      const char *msg = nullptr;
      d.getErrorString(r, &msg);
      failure = std::string("the GPU reported ") + (msg ? msg : "an error");
    } else {
      ncclResult_t state = ncclSuccess;
      comm::nccl().commGetAsyncError(s.nccl(), &state);
      if (state != ncclSuccess && state != ncclInProgress)
        failure = std::string("NCCL reported ") + comm::nccl().getErrorString(state);
      else if (comm::now() > deadline)
        failure = "it did not complete within " + std::to_string(seconds) +
                  " s (DATTN_RING_TIMEOUT): the peer died or hangs";
    }
    if (!failure.empty()) {
      abortAll();
      throw Error("ring: " + rankName(*s.comm) + ", " + what + ": " + failure +
                  "; the communicators were aborted (make a new ring to go on)");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void NcclRing::checkPlans() {
  const int P = plan_.ranks;
  const rt::Driver &d = rt::driver();
  std::vector<CUdeviceptr> buffers(state_.size(), 0);
  std::vector<std::vector<uint64_t>> seen(state_.size(), std::vector<uint64_t>(P, 0));
  auto release = [&] {
    for (size_t m = 0; m < state_.size(); ++m)
      if (buffers[m]) {
        rt::ContextScope scope(state_[m]->comm->context());
        d.memFree(buffers[m]);
      }
  };
  try {
    for (size_t m = 0; m < state_.size(); ++m) {
      rt::ContextScope scope(state_[m]->comm->context());
      rt::check(d.memAlloc(&buffers[m], P * sizeof(uint64_t)), "ring: the plan check's buffer");
      const int r = state_[m]->comm->rank();
      rt::check(d.memcpyHtoD(buffers[m] + r * sizeof(uint64_t), &plan_.hash, sizeof(uint64_t)),
                "ring: the plan check's buffer");
    }
    size_t m = 0;
    group("the plan check (all-gather)", [&](Member &s) {
      const CUdeviceptr b = buffers[m++];
      const int r = s.comm->rank();
      comm::check(comm::nccl().allGather(reinterpret_cast<void *>(b + r * sizeof(uint64_t)),
                                         reinterpret_cast<void *>(b), 1, ncclUint64, s.nccl(),
                                         s.commStream),
                  "ring: the plan check");
    });
    for (size_t x = 0; x < state_.size(); ++x) {
      Member &s = *state_[x];
      {
        rt::ContextScope scope(s.comm->context());
        record(s.received[0], s.commStream);
      }
      watch(s, s.received[0], "comparing ring plans with every rank");
      rt::ContextScope scope(s.comm->context());
      rt::check(d.memcpyDtoH(seen[x].data(), buffers[x], P * sizeof(uint64_t)),
                "ring: reading the plan check");
    }
  } catch (...) {
    release();
    throw;
  }
  release();
  std::map<uint64_t, std::string> groups;
  for (int r = 0; r < P; ++r) {
    std::string &g = groups[seen[0][r]];
    g += (g.empty() ? "" : ", ") + std::to_string(r);
  }
  if (groups.size() > 1) {
    std::string list;
    for (const auto &[hash, ranks] : groups)
      list += (list.empty() ? "" : "; ") + std::string("ranks ") + ranks + " planned " +
              std::to_string(hash);
    abortAll();
    throw Error("ring (attention '" + members_[0].attention->spec().name +
                "'): the ranks disagree on the ring (spec, sequence length, batch, ring "
                "size or block mask): " + list + "; this process planned N = " +
                std::to_string(plan_.seqLen) + " over " + std::to_string(P) + " ranks");
  }
}

std::vector<void *> NcclRing::computeStreams(const std::vector<void *> &streams, size_t given,
                                             const char *pass) const {
  if (given != state_.size())
    throw ArgumentError(std::string(pass) + ": this process has " +
                        std::to_string(state_.size()) + " ranks, but tensors for " +
                        std::to_string(given));
  if (!streams.empty() && streams.size() != state_.size())
    throw ArgumentError(std::string(pass) + ": " + std::to_string(streams.size()) +
                        " streams for " + std::to_string(state_.size()) + " ranks");
  if (aborted_)
    throw Error(std::string(pass) + ": an earlier error aborted this ring's communicators; "
                "make a new ring");
  std::vector<void *> out(state_.size(), nullptr);
  for (size_t m = 0; m < streams.size(); ++m)
    out[m] = streams[m];
  return out;
}

int64_t NcclRing::post(const std::string &what, int step, bool partials) {
  int64_t sent = 0;
  group(what, [&](Member &s) {
    const comm::Nccl &n = comm::nccl();
    const rt::Exchange e = partials ? s.run->partials(step) : s.run->blocks(step);
    for (const rt::Piece &p : e.send) {
      comm::check(n.send(p.at, p.bytes, ncclUint8, e.sendPeer, s.nccl(), s.commStream),
                  "ring: ncclSend");
      sent += p.bytes;
    }
    for (const rt::Piece &p : e.recv)
      comm::check(n.recv(p.at, p.bytes, ncclUint8, e.recvPeer, s.nccl(), s.commStream),
                  "ring: ncclRecv");
  });
  return sent;
}

int64_t NcclRing::transfer(int step, bool backward) {
  for (auto &s : state_) {
    rt::ContextScope scope(s->comm->context());
    waitFor(s->commStream, s->packed[step]);
    if (step >= 3) // the slot's last reader
      waitFor(s->commStream, s->attended[step - 2]);
    if (backward && step >= 2 && s->run->passAlong()) // the block goes on with its partials
      waitFor(s->commStream, s->attended[step - 1]);
  }
  const int64_t sent = post("step " + std::to_string(step) + "'s K and V", step, false);
  for (auto &s : state_) {
    rt::ContextScope scope(s->comm->context());
    record(s->received[step], s->commStream);
  }
  return sent;
}

int64_t NcclRing::returnPartials(int step) {
  for (auto &s : state_) {
    rt::ContextScope scope(s->comm->context());
    waitFor(s->commStream, s->attended[step]);
    if (step >= 2) // the returned buffers' last reader
      waitFor(s->commStream, s->added[step - 1]);
  }
  const int64_t sent = post("step " + std::to_string(step) + "'s dK/dV partials", step, true);
  for (auto &s : state_) {
    rt::ContextScope scope(s->comm->context());
    record(s->returned[step], s->commStream);
  }
  return sent;
}

/// The steps of both passes (the schedule at the top of this file).
int64_t NcclRing::run(bool backward) {
  const int P = plan_.ranks;
  int64_t sent = 0;
  for (auto &s : state_) {
    rt::ContextScope scope(s->comm->context());
    if (backward)
      s->run->beginBackward();
    else
      s->run->beginForward();
    if (P > 1) {
      s->run->pack(1);
      record(s->packed[1], s->run->stream());
    }
  }
  if (P > 1)
    sent += transfer(1, backward);
  for (int step = 1; step < P; ++step) {
    for (auto &s : state_) {
      rt::ContextScope scope(s->comm->context());
      const CUstream c = s->run->stream();
      waitFor(c, s->received[step]);
      if (step + 1 < P) { // the pack buffer is free: step's send is done
        s->run->pack(step + 1);
        record(s->packed[step + 1], c);
      }
      if (backward)
        s->run->attendBackward(step, step % 2);
      else
        s->run->attend(step, step % 2);
      record(s->attended[step], c);
    }
    if (step + 1 < P)
      sent += transfer(step + 1, backward);
    if (backward) {
      sent += returnPartials(step);
      for (auto &s : state_) {
        rt::ContextScope scope(s->comm->context());
        waitFor(s->run->stream(), s->returned[step]);
        s->run->addReturned(step);
        record(s->added[step], s->run->stream());
      }
    }
  }
  for (auto &s : state_) {
    rt::ContextScope scope(s->comm->context());
    if (backward)
      s->run->endBackward();
    else
      s->run->endForward();
  }
  // Watch the transfers in the order they were posted: the first that
  // does not complete names its step and peers.
  const std::string pass = backward ? "backward" : "forward";
  for (int step = 1; step < P; ++step)
    for (auto &s : state_) {
      // The peers the transfers went to and came from (passed along: the
      // neighbours, whoever's block it is).
      const rt::Exchange blocks = s->run->blocks(step);
      watch(*s, s->received[step],
            pass + " step " + std::to_string(step) + " (receiving from rank " +
                std::to_string(blocks.recvPeer) + ", sending to rank " +
                std::to_string(blocks.sendPeer) + ")");
      if (backward) {
        const rt::Exchange partials = s->run->partials(step);
        watch(*s, s->returned[step],
              pass + " step " + std::to_string(step) + " (returning dK/dV to rank " +
                  std::to_string(partials.sendPeer) + ", receiving them from rank " +
                  std::to_string(partials.recvPeer) + ")");
      }
    }
  return sent;
}

int64_t NcclRing::forward(const std::vector<RingRankForward> &args,
                          const std::vector<void *> &streams) {
  const std::vector<void *> c = computeStreams(streams, args.size(), "ring forward");
  for (size_t m = 0; m < state_.size(); ++m) // all checked before any work
    state_[m]->run->bindForward(args[m], static_cast<CUstream>(c[m]));
  return run(false);
}

int64_t NcclRing::backward(const std::vector<RingRankBackward> &args,
                           const std::vector<void *> &streams) {
  const std::vector<void *> c = computeStreams(streams, args.size(), "ring backward");
  for (size_t m = 0; m < state_.size(); ++m)
    state_[m]->run->bindBackward(args[m], static_cast<CUstream>(c[m]));
  return run(true);
}

} // namespace dattn
