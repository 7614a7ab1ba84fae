// dattn: the ring's communication setup. NCCL is the engine (loaded with
// dlopen, like libcuda and libnvrtc: nothing links it); dattn adds no
// transport of its own. A rank learns who it is the way launchers say it:
//
//   torchrun     RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
//   Slurm (srun) SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (+ MASTER_ADDR/PORT)
//   Open MPI     OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   MPICH / PMI  PMI_RANK, PMI_SIZE (+ MPI_LOCALRANKID)
//
// and meets the others through NCCL's own rendezvous: NCCL_COMM_ID
// ("host:port") when set, else MASTER_ADDR and MASTER_PORT + 1 (the port
// after torchrun's store), which every rank derives alike. A caller that
// already has a unique id (e.g. broadcast by torch.distributed) passes it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dattn {

struct RingBootstrap {
  int rank = 0;
  int worldSize = 1;
  int localRank = 0;      ///< which GPU of its host the rank drives
  std::string launcher;   ///< "torchrun", "slurm", "openmpi", "pmi"
  std::string rendezvous; ///< "host:port" for NCCL_COMM_ID; "" = a unique id is passed
};

/// Reads the launcher's variables through `getenv` (default: the process
/// environment). Throws Error naming the variable when one is missing, not
/// a number, or inconsistent (rank outside [0, world size)), or when no
/// rendezvous address can be derived.
RingBootstrap bootstrapFromEnvironment(
    const std::function<const char *(const char *)> &getenv = nullptr);

/// NCCL as dattn loaded it: version ("2.28.9") and library path, or why not.
struct NcclInfo {
  std::string version, library, error;
};
NcclInfo queryNccl();

/// NCCL's unique id (the bytes of an ncclUniqueId): one rank makes it, every
/// rank of the world joins with the same bytes.
struct RingUniqueId {
  char bytes[128] = {};
};
/// A new id (ncclGetUniqueId): for the caller to broadcast to the others.
/// With NCCL_COMM_ID set, every rank computes the same id from it.
RingUniqueId newRingUniqueId();

/// One rank's NCCL communicator, non-blocking: every wait on it has a
/// deadline (env::ringTimeoutSeconds), after which it is aborted. Multicast
/// (NVLS) stays off: NCCL_NVLS_ENABLE=0 unless the caller set it.
class RingCommunicator {
public:
  /// Joins a world of `worldSize` ranks as `rank`, on GPU `device`.
  RingCommunicator(int rank, int worldSize, int device, const RingUniqueId &id);
  /// From a launcher's environment (bootstrapFromEnvironment): the rank and
  /// world it names, GPU = its local rank (or `device` when >= 0), and
  /// NCCL's rendezvous at NCCL_COMM_ID or MASTER_ADDR:MASTER_PORT+1.
  static std::unique_ptr<RingCommunicator> fromEnvironment(int device = -1);
  /// One process driving several GPUs: rank i of a world of
  /// devices.size() ranks on GPU devices[i].
  static std::vector<std::unique_ptr<RingCommunicator>> forDevices(const std::vector<int> &devices);
  ~RingCommunicator();
  RingCommunicator(const RingCommunicator &) = delete;
  RingCommunicator &operator=(const RingCommunicator &) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  /// Ends every pending operation; the communicator is unusable after.
  void abort();
  bool aborted() const { return aborted_; }
  /// The ncclComm_t.
  void *handle() const { return comm_; }
  /// The CUcontext of its GPU (the primary context).
  void *context() const { return context_; }

private:
  RingCommunicator() = default;
  void *comm_ = nullptr;
  void *context_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
  bool aborted_ = false;
};

} // namespace dattn
