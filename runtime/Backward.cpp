// CompiledAttention::backward: validate, carve the workspace, clear what is
// accumulated into, enqueue Delta, the branch kernels and finalize.
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

#include "dattn/backward_params.cuh"
#include "dattn/tile_plan.cuh"

#include <algorithm>
#include <vector>

namespace dattn {

void CompiledAttention::backward(const BackwardArgs &a) {
  rt::ArgumentChecker check("backward", spec_, device_);
  int64_t B = 0, N = 0;
  check.batchAndLength(a.q, &B, &N);
  const int64_t H = spec_.heads, Hk = spec_.kvHeads, D = spec_.headDim;
  bwd::Params p{};
  p.qL = check.rows("q", a.q, B, N, H);
  p.kL = check.rows("k", a.k, B, N, Hk);
  p.vL = check.rows("v", a.v, B, N, Hk);
  p.oL = check.rows("out", a.out, B, N, H);
  p.doutL = check.rows("dout", a.dout, B, N, H);
  p.dqL = check.rows("dq", a.dq, B, N, H);
  p.dkL = check.rows("dk", a.dk, B, N, Hk);
  p.dvL = check.rows("dv", a.dv, B, N, Hk);
  check.lse("lse", a.lse, B, N);
  check.mask(a.mask, N);

  const int slot = a.deterministic ? 1 : 0;
  const int variant = a.q.isContiguous() && a.k.isContiguous() && a.v.isContiguous() &&
                              a.out.isContiguous() && a.dout.isContiguous() &&
                              a.dq.isContiguous() && a.dk.isContiguous() && a.dv.isContiguous()
                          ? 1
                          : 0;
  if (!backward_[slot][variant]) {
    // Loading a module inside a stream capture would break the capture.
    CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
    rt::driver().streamIsCapturing(static_cast<CUstream>(a.stream), &capture);
    if (capture != CU_STREAM_CAPTURE_STATUS_NONE)
      throw Error("backward(attention '" + spec_.name + "'): the " + (a.deterministic ? "deterministic " : "") +
                  "backward kernels are not loaded yet and the stream is being captured: "
                  "call prepareBackward(" + (a.deterministic ? "true" : "false") +
                  ") before the capture");
    loadBackward(slot, variant);
  }
  const EmittedModule &mod = backwardModules_[slot][variant];
  const rt::LoadedModule &loaded = *backward_[slot][variant];
  const rt::BackwardWorkspace ws = rt::backwardWorkspace(mod, B, N, H, D);
  check.workspace(a.workspace, ws.bytes());

  rt::ContextScope scope(context_);
  const rt::Driver &d = rt::driver();
  float *base = static_cast<float *>(a.workspace.data);
  p.q = a.q.data;
  p.k = a.k.data;
  p.v = a.v.data;
  p.o = a.out.data;
  p.dout = a.dout.data;
  p.lse = static_cast<const float *>(a.lse.data);
  p.delta = base;
  p.dqAcc = ws.dqAcc >= 0 ? base + ws.dqAcc : nullptr;
  p.dkAcc = ws.dkAcc >= 0 ? base + ws.dkAcc : nullptr;
  p.dvAcc = ws.dvAcc >= 0 ? base + ws.dvAcc : nullptr;
  p.dq = a.dq.data;
  p.dk = a.dk.data;
  p.dv = a.dv.data;
  p.seqLen = N;
  p.heads = static_cast<int>(H);
  p.kvHeads = static_cast<int>(Hk);
  p.groupSize = static_cast<int>(H / Hk);
  p.scale = static_cast<float>(plan_.scale);
  p.maskRows = reinterpret_cast<const long long *>(a.mask.rowOffsets);
  p.maskCols = reinterpret_cast<const long long *>(a.mask.colIndices);
  CUstream stream = static_cast<CUstream>(a.stream);

  long long batch = B, qE = B * N * H * D, kvE = B * N * Hk * D;
  const int finalizeIndex = static_cast<int>(mod.kernels.size()) - 1;
  auto launchOn = [&](CUstream on, int x, unsigned gx, unsigned gy, unsigned gz, void **args) {
    rt::launchKernel(mod.kernels[x], loaded.functions[x], gx, gy, gz, on, args, "backward: ");
  };
  auto launch = [&](int x, unsigned gx, unsigned gy, unsigned gz, void **args) {
    launchOn(stream, x, gx, gy, gz, args);
  };

  // Zero what is accumulated into, and the directly written gradients: rows
  // no branch reaches (e.g. off every dilation lattice) have zero gradient.
  // Contiguous gradients take memsets; strided ones the finalize kernel's
  // zero mode, which leaves the gaps between their rows alone.
  if (ws.accElems > 0)
    rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(base + ws.deltaCount), 0u,
                               static_cast<size_t>(ws.accElems), stream),
              "backward: clearing the gradient accumulators");
  if (mod.gradientsDirect) {
    int zero = 0;
    const bool dqDirect = !(mod.gradientFinalize & bwd::kFinalizeDq);
    for (auto [t, bit, direct] : {std::tuple{&a.dq, bwd::kZeroDq, dqDirect},
                                  std::tuple{&a.dk, bwd::kZeroDkv, true},
                                  std::tuple{&a.dv, bwd::kZeroDkv, true}}) {
      if (!direct)
        continue;
      if (t->isContiguous())
        rt::check(d.memsetD32Async(reinterpret_cast<CUdeviceptr>(t->data), 0u,
                                   static_cast<size_t>(t == &a.dq ? qE : kvE) *
                                       t->elementBytes() / 4,
                                   stream),
                  "backward: clearing the gradients");
      else
        zero |= bit;
    }
    if (zero) {
      void *args[] = {&p, &qE, &kvE, &zero};
      launch(finalizeIndex, rt::finalizeGrid(qE, kvE, zero, mod.kernels[finalizeIndex].threads), 1,
             1, args);
    }
  }

  int what = mod.gradientFinalize;
  // A branch kernel (dQ or dK/dV pass) of branch ki.branch on stream `on`.
  auto launchBranchKernel = [&](int x, CUstream on) {
    const KernelInfo &ki = mod.kernels[x];
    const BranchPlan &b = plan_.branches[ki.branch];
    const rt::BranchGrid grid = rt::branchGrid(ki, b, N);
    p.tilesPerSegment = grid.tilesPerSegment;
    // Long walks over query tiles in several CTAs, where the module adds
    // dK/dV into fp32 accumulators in any order.
    const int64_t fill =
        rt::keyCtasToFill(multiprocessors_, static_cast<int64_t>(b.heads.size()) * B, splitWaves_);
    const rt::QuerySplit split =
        rt::querySplit(ki, b, N, grid.x, fill, !mod.gradientsDirect && !a.deterministic);
    p.queryChunks = split.chunks;
    p.chunkTiles = split.tiles;
    p.keyCtas = grid.x;
    p.chunkedKeyCtas = split.chunkedKeyCtas;
    CUtensorMap qMap, doutMap;
    void *argsOnly[] = {&p};
    void *argsMaps[] = {&p, &qMap, &doutMap};
    void **args = argsOnly;
    if (rt::takesTensorMaps(ki, {"q", "dout"}, "backward")) {
      const int rows = ki.config.blockM; // the query tile
      qMap = rt::encodeBranchRowMap(a.q, p.qL, b, B, N, H, D, rows, "q");
      doutMap = rt::encodeBranchRowMap(a.dout, p.doutL, b, B, N, H, D, rows, "dout");
      args = argsMaps;
    }
    launchOn(on, x, static_cast<unsigned>(split.gridX(grid.x)),
             static_cast<unsigned>(b.heads.size()), static_cast<unsigned>(B), args);
  };
  // The branch kernels sit between the delta and the finalize kernel: one
  // group per branch, side by side where they are independent and branch
  // streams are on.
  const std::vector<rt::KernelGroup> groups = rt::branchKernelGroups(mod);
  auto launchGroup = [&](int g, void *on) {
    for (int k = 0; k < groups[g].count; ++k)
      launchBranchKernel(groups[g].first + k, static_cast<CUstream>(on));
  };
  for (int x = 0; x <= finalizeIndex; ++x) {
    const KernelInfo &ki = mod.kernels[x];
    void *argsBatch[] = {&p, &batch};
    void *argsFinal[] = {&p, &qE, &kvE, &what};
    switch (ki.role) {
    case KernelRole::Delta:
      launch(x, static_cast<unsigned>((B * N * H + 3) / 4), 1, 1, argsBatch);
      break;
    case KernelRole::DqPass:
    case KernelRole::DkvPass:
      if (x == groups.front().first) // every branch kernel, with the first
        rt::BranchStreams::run(mod.branchesIndependent ? branchStreams_.get() : nullptr, stream,
                               static_cast<int>(groups.size()), launchGroup);
      break;
    default: // FinalizeGradients
      if (what != 0)
        launch(x, rt::finalizeGrid(qE, kvE, what, ki.threads), 1, 1, argsFinal);
      break;
    }
  }
}

} // namespace dattn
