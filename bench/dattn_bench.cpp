// dattn-bench: forward time and effective TFLOP/s of the ANCHORS.md
// configurations on GPU 0. Effective FLOPs count attended pairs only
// (4 * pairs * head_dim); inputs are random, outputs poisoned before the
// first run and checked for NaN after it, two input sets alternate between
// timed runs so that L2 does not hold them, times are CUDA-event medians.
//
//   dattn-bench [--root DIR] [--iters N] [--only NAME] [--seq N] [--backward]
//   (DIR: the repository). --backward also times the backward pass and
//   reports forward+backward effective TFLOP/s (3.5 x the forward FLOPs).
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/host.h"

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Case {
  const char *file;
  std::vector<int64_t> lengths;
};

struct Inputs {
  std::unique_ptr<dattn::DeviceBuffer> q, k, v;
};

Inputs randomInputs(const dattn::AttentionSpec &s, int64_t n, uint64_t seed) {
  Inputs in;
  uint64_t stream = 0;
  auto make = [&](int heads) {
    const std::vector<float> x =
        dattn::randomNormal(size_t(n) * heads * s.headDim, seed, stream++);
    std::vector<char> enc = dattn::encode(x.data(), x.size(), s.dtype);
    auto buf = std::make_unique<dattn::DeviceBuffer>(enc.size());
    buf->upload(enc.data(), enc.size());
    return buf;
  };
  in.q = make(s.heads);
  in.k = make(s.kvHeads);
  in.v = make(s.kvHeads);
  return in;
}

int run(int argc, char **argv) {
  std::string root = DATTN_SOURCE_DIR, only;
  int iters = 20;
  bool backward = false;
  long long onlySeq = 0; // 0: every length of a configuration
  for (int a = 1; a < argc; ++a) {
    std::string s = argv[a];
    if (s == "--root" && a + 1 < argc)
      root = argv[++a];
    else if (s == "--iters" && a + 1 < argc)
      iters = std::atoi(argv[++a]);
    else if (s == "--only" && a + 1 < argc)
      only = argv[++a];
    else if (s == "--backward")
      backward = true;
    else if (s == "--seq" && a + 1 < argc)
      onlySeq = std::atoll(argv[++a]);
    else {
      std::fprintf(stderr,
                   "usage: dattn-bench [--root DIR] [--iters N] [--only NAME] [--seq N] "
                   "[--backward]\n");
      return 2;
    }
  }
  const std::vector<Case> cases = {
      {"examples/longnet_head_partitioned.dattn", {16384, 65536, 262144}},
      {"examples/longnet_paper.dattn", {32768, 131072}},
      {"bench/dense.dattn", {16384}},
  };
  dattn::Runtime rt(0);
  const dattn::DeviceInfo &dev = rt.device();
  std::printf("GPU 0: %s (%s, %d SMs); batch 1; medians of %d runs\n", dev.name.c_str(),
              dev.arch().c_str(), dev.multiprocessors, iters);
  std::printf("%-26s %8s %10s %9s %14s %11s %11s %10s\n", "config", "N", "time ms",
              "TFLOP/s", "pairs", "inputs MiB", "outputs MiB", "extra MiB");
  for (const auto &c : cases) {
    std::string path = root + "/" + c.file;
    dattn::AttentionSpec spec = dattn::loadSpecFile(path).select("");
    if (!only.empty() && spec.name != only)
      continue;
    auto attn = rt.compile(spec);
    std::printf("# %s: %s, cold compile %.2f s, load %.3f s\n", spec.name.c_str(),
                attn->report().origin.c_str(), attn->report().coldCompileSeconds,
                attn->report().loadSeconds);
    for (int64_t n : c.lengths) {
      if (onlySeq && n != onlySeq)
        continue;
      // Tuned for this N where a tuning database has entries (else the
      // same kernels again, from the cache).
      attn = rt.compile(spec, dattn::CompileOptions{n});
      Inputs sets[2] = {randomInputs(spec, n, 1), randomInputs(spec, n, 2)};
      const size_t outBytes = sets[0].q->bytes(), lseBytes = size_t(spec.heads) * n * 4;
      dattn::DeviceBuffer out(outBytes), lse(lseBytes);
      out.fill32(0xffffffffu);
      lse.fill32(0x7fc00000u);
      const dattn::WorkspaceSizes ws = attn->workspaceSizes(1, n);
      dattn::DeviceBuffer workspace(static_cast<size_t>(std::max(ws.forward, ws.backward)));
      const int64_t H = spec.heads, Hk = spec.kvHeads, D = spec.headDim;
      const dattn::DType t = spec.dtype;
      dattn::ForwardArgs a;
      a.out = dattn::TensorDesc::contiguous(out.data(), t, {1, n, H, D});
      a.lse = dattn::TensorDesc::contiguous(lse.data(), dattn::DType::F32, {1, H, n});
      a.workspace = {workspace.data(), ws.forward};
      auto use = [&](int which) {
        a.q = dattn::TensorDesc::contiguous(sets[which].q->data(), t, {1, n, H, D});
        a.k = dattn::TensorDesc::contiguous(sets[which].k->data(), t, {1, n, Hk, D});
        a.v = dattn::TensorDesc::contiguous(sets[which].v->data(), t, {1, n, Hk, D});
      };
      use(0);
      attn->forward(a);
      dattn::synchronize("first run");
      std::vector<float> lseHost(lseBytes / 4);
      lse.download(lseHost.data(), lseBytes);
      std::vector<char> outHost(outBytes);
      out.download(outHost.data(), outBytes);
      std::vector<float> outF(outBytes / 2);
      dattn::decode(outHost.data(), outF.size(), spec.dtype, outF.data());
      size_t nan = 0;
      for (float x : outF)
        nan += std::isnan(x);
      for (float x : lseHost)
        nan += std::isnan(x);
      if (nan)
        throw dattn::Error(spec.name + " at N = " + std::to_string(n) + ": " +
                           std::to_string(nan) + " outputs were not written (NaN)");
      double ms = dattn::timeMedianMs(
          [&](int i) {
            use(i % 2);
            attn->forward(a);
          },
          3, iters);
      dattn::PairCount pc = dattn::countPairs(attn->plan(), n, 1, nullptr);
      double tflops = 4.0 * double(pc.pairs) * spec.headDim / (ms * 1e-3) / 1e12;
      std::printf("%-26s %8lld %10.3f %9.1f %14lld %11.1f %11.1f %10.1f\n", spec.name.c_str(),
                  static_cast<long long>(n), ms, tflops, static_cast<long long>(pc.pairs),
                  outBytes * (1.0 + 2.0 * spec.kvHeads / spec.heads) / 1048576.0,
                  (outBytes + lseBytes) / 1048576.0, ws.forward / 1048576.0);
      if (backward) {
        // Gradients of input set 0; dout is a third random tensor. Both
        // modes: fp32 dQ reductions (default) and deterministic. The
        // gradients are poisoned (NaN) first: one left unwritten fails.
        use(0);
        attn->forward(a);
        Inputs grads = randomInputs(spec, n, 3); // dout in .q
        dattn::DeviceBuffer dq(outBytes), dk(sets[0].k->bytes()), dv(sets[0].v->bytes());
        dattn::BackwardArgs b;
        b.q = a.q;
        b.k = a.k;
        b.v = a.v;
        b.out = a.out;
        b.lse = a.lse;
        b.dout = a.q;
        b.dout.data = grads.q->data();
        b.dq = a.q;
        b.dq.data = dq.data();
        b.dk = a.k;
        b.dk.data = dk.data();
        b.dv = a.v;
        b.dv.data = dv.data();
        b.workspace = {workspace.data(), ws.backward};
        for (bool deterministic : {false, true}) {
          b.deterministic = deterministic;
          for (auto *g : {&dq, &dk, &dv})
            g->fill32(0xffffffffu);
          attn->backward(b);
          dattn::synchronize("first backward");
          for (auto *g : {&dq, &dk, &dv}) {
            std::vector<char> raw(g->bytes());
            g->download(raw.data(), raw.size());
            std::vector<float> f(raw.size() / 2);
            dattn::decode(raw.data(), f.size(), spec.dtype, f.data());
            for (float x : f)
              if (std::isnan(x))
                throw dattn::Error(spec.name + " at N = " + std::to_string(n) +
                                   ": a gradient was not written (NaN)");
          }
          const int bwdIters = std::max(1, iters / 2);
          double bms = dattn::timeMedianMs([&](int) { attn->backward(b); }, 1, bwdIters);
          std::printf("%-26s %8lld %10.3f %9.1f %14s %11s %11s %10.1f  (forward+backward%s; "
                      "backward %.3f ms)\n",
                      spec.name.c_str(), static_cast<long long>(n), ms + bms,
                      3.5 * 4.0 * double(pc.pairs) * spec.headDim / ((ms + bms) * 1e-3) / 1e12,
                      "", "", "",
                      (ws.forward + ws.backward) / 1048576.0,
                      deterministic ? ", deterministic" : "", bms);
        }
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dattn-bench: %s\n", e.what());
    return 1;
  }
}
