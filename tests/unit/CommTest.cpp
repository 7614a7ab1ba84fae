// The ring's bootstrap from launcher environments (no process is launched:
// the variables come from a map) and the NCCL loader.
#include "dattn/comm.h"
#include "dattn/error.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

namespace dattn::test {
namespace {

struct Env {
  std::map<std::string, std::string> vars;
  const char *operator()(const char *name) const {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  }
};

RingBootstrap boot(const Env &e) { return bootstrapFromEnvironment(std::cref(e)); }

void expectError(const Env &e, const std::string &fragment) {
  try {
    boot(e);
    ADD_FAILURE() << "accepted; expected an error containing: " << fragment;
  } catch (const Error &x) {
    EXPECT_NE(std::string(x.what()).find(fragment), std::string::npos) << x.what();
  }
}

TEST(Bootstrap, Torchrun) {
  Env e{{{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node0"},
         {"MASTER_PORT", "29500"}}};
  RingBootstrap b = boot(e);
  EXPECT_EQ(b.launcher, "torchrun");
  EXPECT_EQ(b.rank, 3);
  EXPECT_EQ(b.worldSize, 8);
  EXPECT_EQ(b.localRank, 1);
  EXPECT_EQ(b.rendezvous, "node0:29501"); // the port after torchrun's store
  e.vars["NCCL_COMM_ID"] = "10.0.0.1:4000"; // NCCL's own variable wins
  EXPECT_EQ(boot(e).rendezvous, "10.0.0.1:4000");
}

TEST(Bootstrap, SlurmOpenMpiAndPmi) {
  RingBootstrap s = boot(Env{{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "16"},
                              {"SLURM_LOCALID", "5"}, {"NCCL_COMM_ID", "n0:5555"}}});
  EXPECT_EQ(s.launcher, "slurm");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.worldSize, 16);
  RingBootstrap o = boot(Env{{{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"MASTER_ADDR", "h"},
                              {"MASTER_PORT", "1234"}}});
  EXPECT_EQ(o.launcher, "openmpi");
  EXPECT_EQ(o.localRank, 1);
  RingBootstrap p = boot(Env{{{"PMI_RANK", "0"}, {"PMI_SIZE", "1"}}});
  EXPECT_EQ(p.launcher, "pmi");
  EXPECT_EQ(p.localRank, 0); // absent: the rank
  EXPECT_EQ(p.rendezvous, ""); // one rank needs nobody
}

TEST(Bootstrap, ErrorsNameTheVariable) {
  expectError(Env{}, "no launcher environment found");
  expectError(Env{{{"RANK", "0"}}}, "WORLD_SIZE is not set");
  expectError(Env{{{"RANK", "x"}, {"WORLD_SIZE", "2"}}}, "RANK='x' is not a non-negative integer");
  expectError(Env{{{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"NCCL_COMM_ID", "h:1"}}},
              "rank 2 is outside a world of 2");
  expectError(Env{{{"RANK", "0"}, {"WORLD_SIZE", "2"}}}, "the ranks cannot meet");
  expectError(Env{{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                   {"MASTER_PORT", "65535"}}},
              "leaves no port after it");
}

TEST(Nccl, LoadsWhereTheToolkitHasIt) {
  const NcclInfo info = queryNccl();
  const bool present = std::ifstream("/usr/local/cuda/lib64/libnccl.so.2").good();
  if (present) {
    EXPECT_EQ(info.error, "");
    EXPECT_EQ(info.version.rfind("2.", 0), 0u) << info.version;
  } else {
    EXPECT_NE(info.error.find("libnccl.so.2"), std::string::npos) << info.error;
  }
}

} // namespace
} // namespace dattn::test
