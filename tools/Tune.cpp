// dattn tune: the autotuner's command. --list (no GPU) prints each branch's
// candidate space per kernel family and stage for the given targets; the
// tuning itself (timing candidates on the GPU into a database) comes with
// the autotuner and says so until then.
#include "CommandUtil.h"
#include "Commands.h"
#include "Options.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/env.h"
#include "dattn/error.h"
#include "dattn/host.h"
#include "dattn/kernels.h"
#include "dattn/tuner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

namespace dattn::tools {

namespace {

void listCandidates(const AttentionPlan &plan, const Target &target) {
  std::printf("attention %s on %s (%d bytes of shared memory per block)\n", plan.name.c_str(),
              target.arch().c_str(), target.smemBytes);
  for (size_t b = 0; b < plan.branches.size(); ++b) {
    const BranchPlan &br = plan.branches[b];
    std::printf("  branch %zu (%zu heads)\n", b, br.heads.size());
    for (const KernelFamily *f : kernelFamilies())
      for (bool deterministic : {false, true}) {
        if (f->pass() == KernelPass::Forward && deterministic)
          continue;
        const std::string why = f->unsupported(plan, br, target);
        const std::string stage = std::string(toString(f->pass())) +
                                  (f->pass() != KernelPass::Forward
                                       ? (deterministic ? ", deterministic" : ", default")
                                       : "");
        if (!why.empty()) {
          if (!deterministic || f->pass() == KernelPass::Forward)
            std::printf("    %-22s %-30s not supported: %s\n", f->name(), stage.c_str(),
                        why.c_str());
          continue;
        }
        const std::vector<KernelConfig> all = f->candidates(plan, br, target, deterministic);
        if (all.empty()) {
          std::printf("    %-22s %-30s not used in this mode\n", f->name(), stage.c_str());
          continue;
        }
        std::printf("    %-22s %-30s %zu candidates:", f->name(), stage.c_str(), all.size());
        for (const KernelConfig &c : all)
          std::printf(" [%s]", c.describe().c_str());
        std::printf("\n");
      }
  }
}

/// Times a spec on the GPU with forced configurations: random inputs
/// uploaded once (every candidate runs on the same buffers), the outputs
/// poisoned before the checked run, an L2 flush before every timed run, the
/// median of `iters`. The outputs a candidate is checked on are a sample of
/// whole rows (the first and last 64, whose tiles are the ragged ones, and
/// ~4K spread over the rest): at 256K the full tensors are gigabytes a
/// candidate, and a wrong tile configuration shows in whole tiles of rows.
class GpuMeasure : public TuneMeasure {
public:
  GpuMeasure(Runtime &rt, const AttentionSpec &spec, int64_t batch, int64_t n, int iters)
      : rt_(rt), spec_(spec), batch_(batch), n_(n), iters_(iters) {
    q_ = randomNormal(size_t(batch * n * spec.heads * spec.headDim), 1, 0);
    k_ = randomNormal(size_t(batch * n * spec.kvHeads * spec.headDim), 1, 1);
    v_ = randomNormal(size_t(batch * n * spec.kvHeads * spec.headDim), 1, 2);
    dout_ = randomNormal(size_t(batch * n * spec.heads * spec.headDim), 1, 3);
    if (spec.needsBlockMask()) {
      const int64_t blk = spec.blockMaskBlock(), nb = (n + blk - 1) / blk;
      std::vector<float> dense(static_cast<size_t>(nb * nb));
      std::mt19937_64 rng(1);
      std::bernoulli_distribution keep(0.5);
      for (float &e : dense)
        e = keep(rng) ? 1.f : 0.f;
      mask_ = BlockMask::fromDense(blk, nb, dense.data());
    }
    const int64_t step = std::max<int64_t>(1, n / 4096);
    for (int64_t r = 0; r < n; ++r)
      if (r < 64 || r >= n - 64 || r % step == 0)
        rows_.push_back(r);
    rt.makeCurrent();
    flush_ = std::make_unique<DeviceBuffer>(size_t(256) << 20); // more than any L2
  }

  Measurement measure(const std::vector<TunedKernel> &kernels, bool backward) override {
    Measurement m;
    try {
      CompileOptions co;
      co.kernels = kernels;
      std::unique_ptr<CompiledAttention> attn = rt_.compile(spec_, co);
      if (!run_) {
        run_ = std::make_unique<HostAttention>(*attn, batch_, n_, q_.data(), k_.data(),
                                               v_.data(), spec_.needsBlockMask() ? &mask_ : nullptr);
        // The upstream gradient uploaded once; the first backward() does it.
      } else {
        run_->useAttention(*attn);
      }
      attn_ = std::move(attn); // the previous one is no longer referenced
      auto flush = [&] { flush_->fill32(0); };
      run_->run(); // poisoned first: an unwritten output cannot match
      std::vector<float> out, lse;
      run_->read(out, lse);
      sampleRows(out, spec_.heads, m.outputs);
      if (backward) {
        run_->backward(dout_.data()); // gradients poisoned first
        std::vector<float> dq, dk, dv;
        run_->readGradients(dq, dk, dv);
        sampleRows(dq, spec_.heads, m.outputs);
        sampleRows(dk, spec_.kvHeads, m.outputs);
        sampleRows(dv, spec_.kvHeads, m.outputs);
        m.ms = timeMedianMs(
            [&](int) {
              run_->rerun();
              run_->rebackward(false);
            },
            1, iters_, flush);
      } else {
        m.ms = timeMedianMs([&](int) { run_->rerun(); }, 1, iters_, flush);
      }
    } catch (const Error &e) {
      m.error = e.what();
    }
    return m;
  }

  /// Compiles the batch's configurations on host threads (NVRTC dominates
  /// a candidate's cost: ~4.5 s against milliseconds of timing); measure()
  /// then loads them from the kernel cache. A failure here is left for
  /// measure() to meet and report.
  void prepare(const std::vector<std::vector<TunedKernel>> &batch, bool backward) override {
    const unsigned threads = std::max(
        1u, std::min<unsigned>(std::thread::hardware_concurrency(),
                               static_cast<unsigned>(batch.size())));
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t x = next++; x < batch.size(); x = next++) {
        try {
          CompileOptions co;
          co.kernels = batch[x];
          std::unique_ptr<CompiledAttention> attn = rt_.compile(spec_, co);
          if (backward)
            attn->prepareBackward(false);
        } catch (const std::exception &) {
        }
      }
    };
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t)
      pool.emplace_back(work);
    work();
    for (std::thread &t : pool)
      t.join();
  }

private:
  /// Appends the sampled rows of x [batch, n, heads, head_dim] to out.
  void sampleRows(const std::vector<float> &x, int heads, std::vector<float> &out) const {
    const size_t row = static_cast<size_t>(heads) * spec_.headDim;
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t r : rows_) {
        const auto at = x.begin() + static_cast<std::ptrdiff_t>((b * n_ + r) * row);
        out.insert(out.end(), at, at + static_cast<std::ptrdiff_t>(row));
      }
  }

  Runtime &rt_;
  const AttentionSpec &spec_;
  int64_t batch_, n_;
  int iters_;
  std::vector<float> q_, k_, v_, dout_;
  std::vector<int64_t> rows_;
  BlockMask mask_;
  std::unique_ptr<DeviceBuffer> flush_;
  std::unique_ptr<CompiledAttention> attn_; ///< what run_ runs now
  std::unique_ptr<HostAttention> run_;      ///< declared last: destroyed before attn_
};

int tuneOnGpu(const Options &o, const std::vector<AttentionSpec> &specs) {
  std::vector<int64_t> lengths;
  for (const std::string &x : splitList(o.get("seq"))) {
    char *end = nullptr;
    const long long n = std::strtoll(x.c_str(), &end, 10);
    if (x.empty() || *end || n < 1 || n > (int64_t(1) << 31))
      throw UsageError{"--seq takes sequence lengths (1 to 2^31, comma-separated), got '" + x +
                       "'"};
    lengths.push_back(n);
  }
  const int64_t batch = o.getInt("batch", 1, 1, 1 << 16);
  const int iters = static_cast<int>(o.getInt("iters", 5, 1, 1000));
  const double budget = static_cast<double>(o.getInt("budget", 600, 1, 1 << 30));
  double minGain = TuneOptions{}.minGain;
  if (o.has("min-gain")) {
    const std::string x = o.get("min-gain");
    char *end = nullptr;
    const double percent = std::strtod(x.c_str(), &end);
    if (x.empty() || *end || !(percent >= 0 && percent < 100))
      throw UsageError{"--min-gain takes a percentage from 0 to under 100, got '" + x + "'"};
    minGain = percent / 100;
  }
  const std::string path = o.get("out", env::tuningDatabase());
  Runtime rt(static_cast<int>(o.getInt("gpu", 0, 0, 1023)));
  const DeviceInfo &dev = rt.device();
  const StageSignatures sig = rt.tuningSignatures();
  const Target target = Target::forGpu(dev.smVersion, dev.smemOptinBytes);
  std::printf("tuning on gpu %d (%s, %s) into %s\n", dev.ordinal, dev.name.c_str(),
              target.arch().c_str(), path.c_str());
  std::vector<std::string> report;
  TuningDatabase db = TuningDatabase::load(path, sig, &report);
  for (const std::string &r : report)
    std::fprintf(stderr, "dattn tune: %s\n", r.c_str());
  const auto start = std::chrono::steady_clock::now();
  bool finished = true;
  std::printf("%-24s %8s %-6s %-9s %-24s %-14s %9s %-14s %9s %7s\n", "attention", "N", "branch",
              "stage", "family", "heuristic", "ms", "tuned", "ms", "speedup");
  for (const AttentionSpec &spec : specs)
    for (int64_t n : lengths) {
      PlanOptions po;
      po.arch = target.arch();
      po.smemBytes = dev.smemOptinBytes;
      const AttentionPlan plan = planAttention(spec, po);
      if (o.has("resume")) {
        const std::vector<TuningKey> keys = tunedKeys(plan, n, o.has("backward"));
        if (std::all_of(keys.begin(), keys.end(),
                        [&](const TuningKey &k) { return db.find(k) != nullptr; })) {
          std::printf("%-24s %8lld already in %s (--resume): skipped\n", spec.name.c_str(),
                      static_cast<long long>(n), path.c_str());
          continue;
        }
      }
      GpuMeasure gpu(rt, spec, batch, n, iters);
      TuneOptions opt;
      opt.backward = o.has("backward");
      opt.minGain = minGain;
      if (o.has("resume")) // kernels of this spec already in the database are not measured
        opt.known = [&](const TuningKey &k) { return db.find(k); };
      const double spent =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      opt.budgetSeconds = std::max(0.0, budget - spent);
      opt.progress = [&](int done, int total, double best) {
        const double t =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::fprintf(stderr, "\r%s N=%lld: %d/%d candidates, best %.3f ms, %.0f s, ~%.0f s left ",
                     spec.name.c_str(), static_cast<long long>(n), done, total, best, t,
                     done ? t / done * (total - done) : 0.0);
      };
      const TuneReport rep = tune(plan, target, n, sig, gpu, opt);
      std::fprintf(stderr, "\n");
      finished = finished && rep.finished;
      for (const TunedResult &k : rep.kernels) {
        for (const std::string &why : k.rejected)
          std::fprintf(stderr, "dattn tune: %s N=%lld %s %s: rejected %s\n", spec.name.c_str(),
                       static_cast<long long>(n), k.entry.key.stage.c_str(),
                       k.entry.key.family.c_str(), why.c_str());
        if (!std::isfinite(k.entry.medianMs))
          continue; // nothing ran: the heuristic stays, no entry
        db.put(k.entry);
        const BranchPlan *b = nullptr;
        std::string heuristic = "?";
        for (const BranchPlan &br : plan.branches)
          for (const PlannedKernel &pk : br.kernels)
            if (!b && pk.stage == k.entry.key.stage && pk.family == k.entry.key.family &&
                tuningKey(plan, br, pk.stage, pk.family, n).str() == k.entry.key.str()) {
              b = &br;
              heuristic = pk.config.describe();
            }
        std::printf("%-24s %8lld %-6ld %-9s %-24s %-14s %9.3f %-14s %9.3f %6.2fx\n",
                    spec.name.c_str(), static_cast<long long>(n),
                    b ? static_cast<long>(b - plan.branches.data()) : -1L,
                    k.entry.key.stage.c_str(), k.entry.key.family.c_str(), heuristic.c_str(),
                    k.entry.heuristicMs,
                    ((k.entry.family != k.entry.key.family ? k.entry.family + " " : "") +
                     k.entry.config.describe())
                        .c_str(),
                    k.entry.medianMs,
                    k.entry.heuristicMs / k.entry.medianMs);
      }
    }
  db.save(path);
  std::printf("%zu entries in %s%s\n", db.size(), path.c_str(),
              finished ? "" : " (the budget ran out: the rest keep the heuristic)");
  return 0;
}

} // namespace

int runTune(const std::vector<std::string> &args) {
  static const char *help =
      "usage: dattn tune --list FILE... [--name NAME] [--arch sm_80,sm_90a]\n"
      "       dattn tune FILE... [--name NAME] --seq N[,N...] [--batch B] [--backward]\n"
      "                  [--out DB] [--budget SECONDS] [--iters K] [--gpu G]\n"
      "                  [--min-gain PERCENT] [--resume]\n"
      "--list prints, per branch, every kernel family's candidate configurations\n"
      "for each target (default sm_80) and stage, or why the family does not run\n"
      "the branch. No GPU is needed.\n"
      "With --seq it times every candidate of every kernel on the GPU at each\n"
      "length (one kernel at a time, the others at their best; the median of\n"
      "--iters runs after an L2 flush; a candidate must match the heuristic's\n"
      "outputs), with --backward the backward's dK/dV kernels too, and writes\n"
      "the winners into the tuning database --out (default DATTN_TUNING_DB or\n"
      "<cache>/tuning.json), merged with what it holds. It stops trying after\n"
      "--budget seconds (default 600). A candidate replaces the heuristic only\n"
      "when the attention runs at least --min-gain percent faster with it\n"
      "(default 1: smaller gains are timing noise). --resume measures only the\n"
      "kernels without an entry in --out for this GPU and build (an attention and\n"
      "length with none missing is skipped), so a run the budget stopped goes on\n"
      "where it stopped, and after a change to the backward's templates only the\n"
      "backward's kernels are measured again (each stage's entries carry the hash\n"
      "of its own templates). Runs with --seq\n"
      "(dattn run, dattn-bench, Runtime::compile with a sequence length) then use\n"
      "the winners.\n";
  if (wantsHelp(args, help))
    return 0;
  Options o(args, {"name", "arch", "seq", "batch", "out", "budget", "iters", "gpu", "min-gain"},
            {"list", "backward", "resume"});
  if (o.has("list") == o.has("seq"))
    throw UsageError{"give --list (no GPU) or --seq N (tune on the GPU)"};
  // Every attention of every file (the shipped databases tune the examples
  // and the benchmark configurations in one run), or those named --name.
  if (o.positional().empty())
    throw UsageError{"dattn tune: give one or more spec files"};
  std::vector<AttentionSpec> specs;
  for (const std::string &path : o.positional())
    for (const AttentionSpec &spec : loadSpecFile(path).attentions)
      if (!o.has("name") || spec.name == o.get("name"))
        specs.push_back(spec);
  if (specs.empty())
    throw UsageError{"dattn tune: no attention named '" + o.get("name") + "' in " +
                     std::to_string(o.positional().size()) + " file(s)"};
  if (o.has("seq"))
    return tuneOnGpu(o, specs);
  for (const AttentionSpec &spec : specs)
    for (const std::string &arch : splitList(o.get("arch", "sm_80"))) {
      const Target target = Target::parse(arch);
      listCandidates(planAttention(spec), target);
    }
  return 0;
}

} // namespace dattn::tools
