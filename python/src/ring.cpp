// _dattn's ring binding: this process's rank of an NCCL ring (NcclRing over
// a RingCommunicator) for one spec, batch and sequence length, run on raw
// device pointers like Attention (python/dattn/distributed.py wraps it with
// torch.distributed for the unique id and autograd).
#include "common.h"

#include "dattn/comm.h"
#include "dattn/error.h"
#include "dattn/host.h"
#include "dattn/reference.h"
#include "dattn/ring_runtime.h"

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstring>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using dattn::py::PyTensor;

struct Ring {
  std::shared_ptr<dattn::Runtime> runtime;
  std::unique_ptr<dattn::CompiledAttention> compiled;
  std::unique_ptr<dattn::RingCommunicator> comm;
  std::unique_ptr<dattn::DeviceBlockMaskBuffer> mask; ///< outlives the ring, which reads it
  std::unique_ptr<dattn::NcclRing> ring;

  Ring(const dattn::AttentionSpec &spec, int device, int rank, int world, nb::bytes id,
       int64_t batch, int64_t seq, const std::vector<int64_t> &maskRows,
       const std::vector<int64_t> &maskCols)
      : runtime(dattn::py::runtimeFor(device)), compiled(runtime->compile(spec, dattn::CompileOptions(seq))) {
    // A block_mask pattern's mask: the plan reads it on the host (which
    // rows each rank needs), the kernels on the GPU; validated first.
    const dattn::BlockMask host =
        dattn::py::hostBlockMask(spec.blockMaskBlock(), maskRows, maskCols);
    if (spec.needsBlockMask() != !maskRows.empty())
      throw dattn::ArgumentError(
          spec.needsBlockMask()
              ? "Ring: attention '" + spec.name +
                    "' has a block_mask pattern: pass block_mask=(crow_indices, col_indices)"
              : "Ring: a block_mask was given, but attention '" + spec.name +
                    "' has no block_mask pattern");
    if (spec.needsBlockMask()) {
      runtime->makeCurrent(); // the buffer goes to the current context: the ring's GPU
      mask = std::make_unique<dattn::DeviceBlockMaskBuffer>(host, seq);
    }
    dattn::RingUniqueId uid;
    if (id.size() != sizeof uid.bytes)
      throw dattn::ArgumentError("Ring: the unique id has " + std::to_string(id.size()) +
                                 " bytes, expected " + std::to_string(sizeof uid.bytes) +
                                 " (from new_ring_unique_id)");
    std::memcpy(uid.bytes, id.c_str(), sizeof uid.bytes);
    nb::gil_scoped_release release; // joining waits for the other ranks
    comm = std::make_unique<dattn::RingCommunicator>(rank, world, device, uid);
    ring = std::make_unique<dattn::NcclRing>(
        std::vector<dattn::RingMember>{
            {compiled.get(), comm.get(), mask ? mask->view() : dattn::DeviceBlockMask{}}},
        batch, seq, mask ? &host : nullptr);
  }

  dattn::DType dtype() const { return compiled->spec().dtype; }

  int64_t forward(const PyTensor &q, const PyTensor &k, const PyTensor &v, const PyTensor &out,
                  const PyTensor &lse, uintptr_t workspace, int64_t bytes, uintptr_t stream) {
    dattn::RingRankForward a;
    dattn::py::describeForward(a, dtype(), q, k, v, out, lse);
    a.workspace = {reinterpret_cast<void *>(workspace), bytes};
    nb::gil_scoped_release release;
    return ring->forward({a}, {reinterpret_cast<void *>(stream)});
  }

  int64_t backward(const PyTensor &q, const PyTensor &k, const PyTensor &v, const PyTensor &out,
                   const PyTensor &lse, const PyTensor &dout, const PyTensor &dq,
                   const PyTensor &dk, const PyTensor &dv, uintptr_t workspace, int64_t bytes,
                   uintptr_t stream) {
    dattn::RingRankBackward a;
    dattn::py::describeBackward(a, dtype(), q, k, v, out, lse, dout, dq, dk, dv);
    a.workspace = {reinterpret_cast<void *>(workspace), bytes};
    nb::gil_scoped_release release;
    return ring->backward({a}, {reinterpret_cast<void *>(stream)});
  }
};

} // namespace

void bindRing(nb::module_ &m) {
  m.def(
      "new_ring_unique_id",
      [] {
        const dattn::RingUniqueId id = dattn::newRingUniqueId();
        return nb::bytes(id.bytes, sizeof id.bytes);
      },
      "NCCL's unique id for a new ring: one rank makes it, the others get it (bytes).");
  nb::class_<Ring>(m, "Ring",
                   "This process's rank of an NCCL ring running one spec (dattn.distributed "
                   "wraps it).")
      .def(nb::init<const dattn::AttentionSpec &, int, int, int, nb::bytes, int64_t, int64_t,
                    const std::vector<int64_t> &, const std::vector<int64_t> &>(),
           "spec"_a, "device"_a, "rank"_a, "world"_a, "unique_id"_a, "batch"_a, "seq"_a,
           "mask_rows"_a = std::vector<int64_t>{}, "mask_cols"_a = std::vector<int64_t>{},
           "Joins the ring (every rank must call it) and compares plans (the block mask "
           "included) with every rank.")
      .def(
          "shard",
          [](const Ring &r) {
            std::vector<std::tuple<int64_t, int64_t>> out;
            for (const dattn::RowRange &x : r.ring->plan().rankPlans.at(r.comm->rank()).shard)
              out.emplace_back(x.begin, x.end);
            return out;
          },
          "The global rows this rank holds, as [begin, end) ranges in local order.")
      .def(
          "workspace_sizes",
          [](const Ring &r) {
            return std::make_tuple(r.ring->workspaceBytes(0), r.ring->backwardWorkspaceBytes(0));
          },
          "(forward bytes, backward bytes) of this rank's workspace.")
      .def("forward", &Ring::forward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "workspace"_a,
           "workspace_bytes"_a, "stream"_a,
           "This rank's forward over the ring; returns the bytes it sent. Returns when the "
           "transfers completed (a dead peer is an error after DATTN_RING_TIMEOUT).")
      .def("backward", &Ring::backward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dout"_a,
           "dq"_a, "dk"_a, "dv"_a, "workspace"_a, "workspace_bytes"_a, "stream"_a,
           "This rank's backward over the ring; returns the bytes it sent.");
}
