// CompiledAttention::forward: validate, fill the launch parameters, enqueue
// the module's kernels (init or memsets, one launch per branch, finalize).
#include "BranchStreams.h"
#include "Context.h"
#include "Launch.h"
#include "Libraries.h"
#include "ModuleLoader.h"
#include "TensorMaps.h"
#include "Validate.h"
#include "Workspace.h"

#include "dattn/error.h"
#include "dattn/kernels.h"
#include "dattn/runtime.h"

#include "dattn/params.cuh"
#include "dattn/tile_plan.cuh"

#include <algorithm>

namespace dattn {

void CompiledAttention::forward(const ForwardArgs &a) const {
  rt::ArgumentChecker check("forward", spec_, device_);
  int64_t B = 0, N = 0;
  check.batchAndLength(a.q, &B, &N);
  const int64_t H = spec_.heads, Hk = spec_.kvHeads, D = spec_.headDim;
  fwd::Params p{};
  p.qL = check.rows("q", a.q, B, N, H);
  p.kL = check.rows("k", a.k, B, N, Hk);
  p.vL = check.rows("v", a.v, B, N, Hk);
  p.oL = check.rows("out", a.out, B, N, H);
  check.lse("lse", a.lse, B, N);
  check.mask(a.mask, N);
  const int64_t workspaceBytes = rt::forwardWorkspaceBytes(module_, B, N, H, D);
  check.workspace(a.workspace, workspaceBytes);

  rt::ContextScope scope(context_);
  const rt::Driver &d = rt::driver();
  p.q = a.q.data;
  p.k = a.k.data;
  p.v = a.v.data;
  p.o = a.out.data;
  p.lse = static_cast<float *>(a.lse.data);
  p.seqLen = N;
  p.heads = static_cast<int>(H);
  p.groupSize = static_cast<int>(H / Hk);
  p.scale = static_cast<float>(plan_.scale);
  if (workspaceBytes > 0)
    p.oAcc = static_cast<float *>(a.workspace.data);
  p.maskRows = reinterpret_cast<const long long *>(a.mask.rowOffsets);
  p.maskCols = reinterpret_cast<const long long *>(a.mask.colIndices);
  CUstream stream = static_cast<CUstream>(a.stream);

  long long batch = B;
  const size_t elems = static_cast<size_t>(B * N * H * D);
  auto launchOne = [&](size_t x, CUstream on) {
    const KernelInfo &ki = module_.kernels[x];
    CUfunction f = static_cast<CUfunction>(forward_->functions[x]);
    // Contiguous outputs (and the accumulator) are initialized with memsets
    // at full bandwidth (0 is +0.0 in every dtype; 0xff800000 is -inf); the
    // init kernel handles strided outputs without touching their gaps.
    if (ki.role == KernelRole::Init && (module_.mergeMode || a.out.isContiguous())) {
      const size_t words = module_.mergeMode ? elems : elems * a.out.elementBytes() / 4;
      CUdeviceptr target = reinterpret_cast<CUdeviceptr>(module_.mergeMode ? p.oAcc : a.out.data);
      rt::check(d.memsetD32Async(target, 0u, words, on), "clearing the output");
      rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(p.lse), 0xff800000u,
                                 static_cast<size_t>(B * H * N), on),
                "setting LSE to -inf");
      return;
    }
    unsigned gx = 1, gy = 1, gz = 1;
    CUtensorMap kMap, vMap;
    void *argsBatch[] = {&p, &batch};
    void *argsOnly[] = {&p};
    void *argsMaps[] = {&p, &kMap, &vMap};
    void **args = argsBatch;
    if (ki.role != KernelRole::Branch) {
      // Init: an element a thread step; the merge finalize: eight.
      const int64_t perStep = ki.role == KernelRole::Finalize ? rt::kConvertElementsPerStep : 1;
      gx = rt::stepGrid((elems + perStep - 1) / perStep, ki.threads);
    } else {
      const BranchPlan &b = plan_.branches[ki.branch];
      args = argsOnly;
      gy = static_cast<unsigned>(b.heads.size());
      gz = static_cast<unsigned>(B);
      const rt::BranchGrid grid = rt::branchGrid(ki, b, N);
      gx = grid.x;
      p.tilesPerSegment = grid.tilesPerSegment;
      if (rt::takesTensorMaps(ki, {"k", "v"}, "forward")) {
        const int rows = ki.config.blockN; // the key tile
        kMap = rt::encodeBranchRowMap(a.k, p.kL, b, B, N, Hk, D, rows, "k");
        vMap = rt::encodeBranchRowMap(a.v, p.vL, b, B, N, Hk, D, rows, "v");
        args = argsMaps;
      }
    }
    rt::launchKernel(ki, f, gx, gy, gz, on, args, "forward: ");
  };
  // The branch kernels (between init and finalize) side by side where they
  // are independent and branch streams are on.
  const std::vector<rt::KernelGroup> groups = rt::branchKernelGroups(module_);
  const rt::BranchStreams *side = module_.branchesIndependent ? branchStreams_.get() : nullptr;
  for (size_t x = 0; x < module_.kernels.size(); ++x) {
    if (module_.kernels[x].branch < 0) {
      launchOne(x, stream);
    } else if (static_cast<int>(x) == groups.front().first) {
      rt::BranchStreams::run(side, stream, static_cast<int>(groups.size()), [&](int g, void *on) {
        for (int k = 0; k < groups[g].count; ++k)
          launchOne(static_cast<size_t>(groups[g].first + k), static_cast<CUstream>(on));
      });
    }
  }
}

} // namespace dattn
