// RingCommunicator (include/dattn/comm.h): NCCL communicators made
// non-blocking, so that no wait on a peer can hang: each is polled against
// a deadline and the communicator aborted when it passes.
#include "Nccl.h"

#include "Context.h"
#include "Libraries.h"

#include "dattn/comm.h"
#include "dattn/env.h"
#include "dattn/error.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace dattn::comm {

void check(ncclResult_t r, const std::string &what) {
  if (r != ncclSuccess && r != ncclInProgress)
    throw Error(what + ": " + nccl().getErrorString(r) + " (NCCL error " + std::to_string(r) +
                "; NCCL_DEBUG=WARN says more)");
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ncclResult_t settle(ncclComm_t comm, double seconds) {
  const double deadline = now() + seconds;
  ncclResult_t state = ncclInProgress;
  while (true) {
    nccl().commGetAsyncError(comm, &state);
    if (state != ncclInProgress || now() > deadline)
      return state;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

} // namespace dattn::comm

namespace dattn {

namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(RingUniqueId::bytes), "ncclUniqueId's size");

void *primaryContext(int device) {
  const rt::Driver &d = rt::driver();
  CUdevice dev;
  rt::check(d.deviceGet(&dev, device), "ring: GPU " + std::to_string(device));
  CUcontext ctx;
  rt::check(d.primaryCtxRetain(&ctx, dev),
            "ring: retaining the primary context of GPU " + std::to_string(device));
  return ctx;
}

/// NCCL's multicast (NVLS) stays off: the ring only sends and receives,
/// and NVLS would reserve memory on machines that have it.
void keepMulticastOff() { setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0); }

/// Waits for each communicator's initialization; on an error or past the
/// deadline aborts them all and throws, naming the ranks.
void settleInit(std::vector<RingCommunicator *> comms, int worldSize) {
  const double seconds = env::ringTimeoutSeconds();
  for (RingCommunicator *c : comms) {
    const ncclResult_t r = comm::settle(static_cast<ncclComm_t>(c->handle()), seconds);
    if (r == ncclSuccess)
      continue;
    for (RingCommunicator *a : comms)
      a->abort();
    if (r == ncclInProgress)
      throw Error("ring: rank " + std::to_string(c->rank()) + " of " +
                  std::to_string(worldSize) + " (GPU " + std::to_string(c->device()) +
                  ") could not join the ring within " + std::to_string(seconds) +
                  " s (DATTN_RING_TIMEOUT): are all ranks started, with the same rendezvous "
                  "(NCCL_COMM_ID or MASTER_ADDR/MASTER_PORT)?");
    comm::check(r, "ring: rank " + std::to_string(c->rank()) + " joining the ring");
  }
}

} // namespace

RingUniqueId newRingUniqueId() {
  keepMulticastOff();
  ncclUniqueId id;
  comm::check(comm::nccl().getUniqueId(&id), "ring: making NCCL's unique id");
  RingUniqueId out;
  std::memcpy(out.bytes, &id, sizeof id);
  return out;
}

RingCommunicator::RingCommunicator(int rank, int worldSize, int device, const RingUniqueId &id) {
  if (worldSize < 1 || rank < 0 || rank >= worldSize)
    throw ArgumentError("ring: rank " + std::to_string(rank) + " is outside a world of " +
                        std::to_string(worldSize));
  const comm::Nccl &n = comm::nccl();
  keepMulticastOff();
  rank_ = rank;
  size_ = worldSize;
  device_ = device;
  context_ = primaryContext(device);
  {
    rt::ContextScope scope(context_);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclUniqueId uid;
    std::memcpy(&uid, id.bytes, sizeof uid);
    ncclComm_t c = nullptr;
    comm::check(n.commInitRankConfig(&c, worldSize, uid, rank, &config),
                "ring: rank " + std::to_string(rank) + " joining the ring");
    comm_ = c;
  }
  settleInit({this}, worldSize);
}

std::unique_ptr<RingCommunicator> RingCommunicator::fromEnvironment(int device) {
  const RingBootstrap b = bootstrapFromEnvironment();
  if (!b.rendezvous.empty())
    setenv("NCCL_COMM_ID", b.rendezvous.c_str(), /*overwrite=*/0);
  else if (b.worldSize > 1)
    throw Error("ring bootstrap (" + b.launcher + "): no rendezvous address");
  // With NCCL_COMM_ID every rank derives the same id; rank 0 listens there.
  const RingUniqueId id = newRingUniqueId();
  return std::make_unique<RingCommunicator>(b.rank, b.worldSize,
                                            device >= 0 ? device : b.localRank, id);
}

std::vector<std::unique_ptr<RingCommunicator>>
RingCommunicator::forDevices(const std::vector<int> &devices) {
  if (devices.empty())
    throw ArgumentError("ring: no GPUs given");
  const comm::Nccl &n = comm::nccl();
  const RingUniqueId id = newRingUniqueId();
  ncclUniqueId uid;
  std::memcpy(&uid, id.bytes, sizeof uid);
  const int P = static_cast<int>(devices.size());
  std::vector<std::unique_ptr<RingCommunicator>> out;
  std::vector<RingCommunicator *> raw;
  for (int i = 0; i < P; ++i) {
    out.emplace_back(new RingCommunicator());
    RingCommunicator &c = *out.back();
    c.rank_ = i;
    c.size_ = P;
    c.device_ = devices[i];
    c.context_ = primaryContext(devices[i]);
    raw.push_back(&c);
  }
  // One thread creating several ranks: the creations form one group.
  comm::check(n.groupStart(), "ring: ncclGroupStart");
  for (RingCommunicator *c : raw) {
    rt::ContextScope scope(c->context_);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    comm::check(n.commInitRankConfig(&comm, P, uid, c->rank_, &config),
                "ring: rank " + std::to_string(c->rank_) + " joining the ring");
    c->comm_ = comm;
  }
  comm::check(n.groupEnd(), "ring: creating the communicators");
  settleInit(raw, P);
  return out;
}

void RingCommunicator::abort() {
  if (aborted_ || !comm_)
    return;
  aborted_ = true;
  try {
    rt::ContextScope scope(context_);
    comm::nccl().commAbort(static_cast<ncclComm_t>(comm_));
  } catch (...) {
    // Already failing: abort is the last resort and reports nothing.
  }
  comm_ = nullptr;
}

RingCommunicator::~RingCommunicator() {
  if (!comm_ || aborted_)
    return;
  try {
    rt::ContextScope scope(context_);
    const comm::Nccl &n = comm::nccl();
    ncclComm_t c = static_cast<ncclComm_t>(comm_);
    // Finalize flushes pending work; past the deadline (a dead peer) abort.
    n.commFinalize(c);
    if (comm::settle(c, env::ringTimeoutSeconds()) == ncclSuccess)
      n.commDestroy(c);
    else
      n.commAbort(c);
  } catch (...) {
    // Destructors do not throw.
  }
}

} // namespace dattn
