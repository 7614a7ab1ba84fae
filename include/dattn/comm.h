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
#include <string>

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

} // namespace dattn
