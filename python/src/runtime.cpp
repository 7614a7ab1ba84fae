// _dattn's runtime bindings: a compiled attention on a GPU, run on raw
// device pointers with shapes and strides and a CUDA stream, so the torch
// ops (python/dattn/ops.py) need no libtorch at build time. One Runtime per
// GPU, shared by every attention compiled on it (it binds the GPU's primary
// context, the one PyTorch uses).
#include "common.h"

#include "dattn/compiler.h"
#include "dattn/error.h"
#include "dattn/reference.h"
#include "dattn/runtime.h"

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <map>
#include <memory>
#include <mutex>

namespace nb = nanobind;
using namespace nb::literals;

namespace dattn::py {

TensorDesc describe(const PyTensor &t, DType dtype, const char *name) {
  const auto &[ptr, shape, strides] = t;
  if (shape.size() != strides.size() || shape.empty() ||
      shape.size() > static_cast<size_t>(TensorDesc::kMaxRank))
    throw ArgumentError(std::string(name) + ": " + std::to_string(shape.size()) +
                        " dims and " + std::to_string(strides.size()) +
                        " strides (1 to 4 dims, one stride each)");
  TensorDesc d;
  d.data = reinterpret_cast<void *>(ptr);
  d.dtype = dtype;
  d.rank = static_cast<int>(shape.size());
  for (int x = 0; x < d.rank; ++x) {
    d.shape[x] = shape[x];
    d.strides[x] = strides[x];
  }
  return d;
}

std::shared_ptr<Runtime> runtimeFor(int device) {
  static std::mutex mutex;
  static std::map<int, std::shared_ptr<Runtime>> runtimes;
  std::lock_guard<std::mutex> lock(mutex);
  auto &rt = runtimes[device];
  if (!rt)
    rt = std::make_shared<Runtime>(device);
  return rt;
}

} // namespace dattn::py

namespace {

using dattn::py::PyTensor;
using dattn::py::runtimeFor;

/// A spec compiled for one GPU.
struct Attention {
  std::shared_ptr<dattn::Runtime> runtime;
  std::unique_ptr<dattn::CompiledAttention> compiled;

  Attention(const dattn::AttentionSpec &spec, int device, int64_t seq)
      : runtime(runtimeFor(device)), compiled(runtime->compile(spec, dattn::CompileOptions(seq))) {}

  dattn::DType dtype() const { return compiled->spec().dtype; }

  static dattn::DeviceBlockMask mask(uintptr_t rows, uintptr_t cols, int64_t block,
                                     int64_t numBlockRows, int64_t nnz) {
    dattn::DeviceBlockMask m;
    m.rowOffsets = reinterpret_cast<const int64_t *>(rows);
    m.colIndices = reinterpret_cast<const int64_t *>(cols);
    m.block = block;
    m.numBlockRows = numBlockRows;
    m.numNonZero = nnz;
    return m;
  }

  void forward(const PyTensor &q, const PyTensor &k, const PyTensor &v, const PyTensor &out,
               const PyTensor &lse, uintptr_t workspace, int64_t workspaceBytes,
               uintptr_t stream, uintptr_t maskRows, uintptr_t maskCols, int64_t maskBlock,
               int64_t maskBlockRows, int64_t maskNnz) {
    dattn::ForwardArgs a;
    dattn::py::describeForward(a, dtype(), q, k, v, out, lse);
    a.workspace = {reinterpret_cast<void *>(workspace), workspaceBytes};
    a.stream = reinterpret_cast<void *>(stream);
    if (maskRows)
      a.mask = mask(maskRows, maskCols, maskBlock, maskBlockRows, maskNnz);
    nb::gil_scoped_release release;
    compiled->forward(a);
  }

  void backward(const PyTensor &q, const PyTensor &k, const PyTensor &v, const PyTensor &out,
                const PyTensor &lse, const PyTensor &dout, const PyTensor &dq,
                const PyTensor &dk, const PyTensor &dv, uintptr_t workspace,
                int64_t workspaceBytes, uintptr_t stream, bool deterministic,
                uintptr_t maskRows, uintptr_t maskCols, int64_t maskBlock,
                int64_t maskBlockRows, int64_t maskNnz) {
    dattn::BackwardArgs a;
    dattn::py::describeBackward(a, dtype(), q, k, v, out, lse, dout, dq, dk, dv);
    a.workspace = {reinterpret_cast<void *>(workspace), workspaceBytes};
    a.stream = reinterpret_cast<void *>(stream);
    a.deterministic = deterministic;
    if (maskRows)
      a.mask = mask(maskRows, maskCols, maskBlock, maskBlockRows, maskNnz);
    nb::gil_scoped_release release;
    compiled->backward(a);
  }
};

/// Membership of every (branch, head, i, j) as bytes (1 = j in S_b(h, i),
/// causal included), [branches, heads, N, N]: for references built from
/// dense masks. Specs with a block_mask pattern need the mask and are
/// refused here.
/// A host block mask for sequence length n, validated (ArgumentError saying
/// which entry is wrong).
dattn::BlockMask hostMask(int64_t block, const std::vector<int64_t> &rows,
                          const std::vector<int64_t> &cols, int64_t n) {
  dattn::BlockMask m = dattn::py::hostBlockMask(block, rows, cols);
  m.validate(n);
  return m;
}

nb::bytes denseMasks(const dattn::AttentionSpec &spec, int64_t n,
                     const std::vector<int64_t> &maskRows,
                     const std::vector<int64_t> &maskCols) {
  dattn::BlockMask mask;
  if (spec.needsBlockMask()) {
    if (maskRows.empty())
      throw dattn::ArgumentError("dense_masks: attention '" + spec.name +
                                 "' has a block_mask pattern: pass mask_rows and mask_cols");
    mask = hostMask(spec.blockMaskBlock(), maskRows, maskCols, n);
  }
  if (n < 1 || n > 8192)
    throw dattn::ArgumentError("dense_masks: N must be in [1, 8192], got " + std::to_string(n));
  const int64_t B = static_cast<int64_t>(spec.branches.size()), H = spec.heads;
  std::string out(static_cast<size_t>(B * H * n * n), '\0');
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          if (dattn::branchContains(spec, spec.branches[b], static_cast<int>(h), i, j, n,
                                    spec.needsBlockMask() ? &mask : nullptr))
            out[((b * H + h) * n + i) * n + j] = 1;
  return nb::bytes(out.data(), out.size());
}

} // namespace

void bindRuntime(nb::module_ &m) {
  nb::class_<Attention>(m, "Attention",
                        "A spec compiled for one GPU (the torch ops wrap it: dattn.ops).")
      .def(nb::init<const dattn::AttentionSpec &, int, int64_t>(), "spec"_a, "device"_a,
           "seq"_a = 0,
           "Compiles `spec` for GPU `device`; with `seq`, the tuning databases' kernels for "
           "that sequence length.")
      .def(
          "workspace_sizes",
          [](const Attention &a, int64_t batch, int64_t seq) {
            const dattn::WorkspaceSizes w = a.compiled->workspaceSizes(batch, seq);
            return std::make_tuple(w.forward, w.backward);
          },
          "batch"_a, "seq"_a, "(forward bytes, backward bytes) of workspace for (batch, N).")
      .def("prepare_backward",
           [](Attention &a, bool deterministic) { a.compiled->prepareBackward(deterministic); },
           "deterministic"_a = false,
           "Compiles and loads the backward kernels now (before a CUDA-graph capture).")
      .def("forward", &Attention::forward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a,
           "workspace"_a, "workspace_bytes"_a, "stream"_a, "mask_rows"_a = 0,
           "mask_cols"_a = 0, "mask_block"_a = 0, "mask_block_rows"_a = 0, "mask_nnz"_a = 0,
           "Enqueues the forward on `stream`; tensors are (data_ptr, shape, strides).")
      .def("backward", &Attention::backward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dout"_a,
           "dq"_a, "dk"_a, "dv"_a, "workspace"_a, "workspace_bytes"_a, "stream"_a,
           "deterministic"_a = false, "mask_rows"_a = 0, "mask_cols"_a = 0,
           "mask_block"_a = 0, "mask_block_rows"_a = 0, "mask_nnz"_a = 0,
           "Enqueues the backward on `stream`.");
  m.def("dense_masks", &denseMasks, "spec"_a, "seq"_a,
        "mask_rows"_a = std::vector<int64_t>{}, "mask_cols"_a = std::vector<int64_t>{},
        "[branches, heads, N, N] uint8 membership (causal included), for references; a "
        "spec with a block_mask pattern takes its mask as host BSR lists.");
  m.def(
      "check_block_mask",
      [](int64_t block, const std::vector<int64_t> &rows, const std::vector<int64_t> &cols,
         int64_t seq) { hostMask(block, rows, cols, seq); },
      "block"_a, "rows"_a, "cols"_a, "seq"_a,
      "Raises ArgumentError (which entry is wrong) unless the BSR lists are a block mask "
      "for sequence length `seq`.");
}
