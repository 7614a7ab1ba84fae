// The bootstrap from launcher environments (include/dattn/comm.h).
#include "dattn/comm.h"
#include "dattn/error.h"

#include <cstdlib>

namespace dattn {

namespace {

/// The launcher conventions, in the order they are tried: the first whose
/// rank variable is set decides.
struct Convention {
  const char *launcher, *rank, *size, *localRank;
};
const Convention kConventions[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
    {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
};

int number(const std::function<const char *(const char *)> &get, const char *name,
           const char *launcher, bool required, int fallback) {
  const char *v = get(name);
  if (!v || !*v) {
    if (required)
      throw Error(std::string("ring bootstrap (") + launcher + "): " + name + " is not set");
    return fallback;
  }
  char *end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > (1 << 24))
    throw Error(std::string("ring bootstrap (") + launcher + "): " + name + "='" + v +
                "' is not a non-negative integer");
  return static_cast<int>(x);
}

} // namespace

RingBootstrap bootstrapFromEnvironment(const std::function<const char *(const char *)> &getenv) {
  const std::function<const char *(const char *)> get =
      getenv ? getenv : [](const char *n) -> const char * { return std::getenv(n); };
  const Convention *c = nullptr;
  for (const Convention &k : kConventions)
    if (const char *v = get(k.rank); v && *v) {
      c = &k;
      break;
    }
  if (!c)
    throw Error("ring bootstrap: no launcher environment found (none of RANK, SLURM_PROCID, "
                "OMPI_COMM_WORLD_RANK, PMI_RANK is set): run under torchrun, srun or mpirun, "
                "or pass rank, world size, device and a unique id");
  RingBootstrap b;
  b.launcher = c->launcher;
  b.rank = number(get, c->rank, c->launcher, true, 0);
  b.worldSize = number(get, c->size, c->launcher, true, 1);
  b.localRank = number(get, c->localRank, c->launcher, false, b.rank);
  if (b.worldSize < 1 || b.rank >= b.worldSize)
    throw Error("ring bootstrap (" + b.launcher + "): rank " + std::to_string(b.rank) +
                " is outside a world of " + std::to_string(b.worldSize));
  if (const char *id = get("NCCL_COMM_ID"); id && *id) {
    b.rendezvous = id;
  } else {
    const char *addr = get("MASTER_ADDR");
    const char *port = get("MASTER_PORT");
    if (addr && *addr && port && *port) {
      const int p = number(get, "MASTER_PORT", c->launcher, true, 0);
      if (p < 1 || p >= 65535)
        throw Error("ring bootstrap (" + b.launcher + "): MASTER_PORT=" + port +
                    " leaves no port after it for NCCL's rendezvous");
      b.rendezvous = std::string(addr) + ":" + std::to_string(p + 1);
    } else if (b.worldSize > 1) {
      throw Error("ring bootstrap (" + b.launcher + "): neither NCCL_COMM_ID nor MASTER_ADDR "
                  "and MASTER_PORT is set, so the ranks cannot meet; set one, or pass a "
                  "unique id (e.g. broadcast over torch.distributed)");
    }
  }
  return b;
}

} // namespace dattn
