#include "CommandUtil.h"
#include "Npy.h"

#include "dattn/error.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <tuple>

namespace dattn::tools {

bool wantsHelp(const std::vector<std::string> &args, const char *help) {
  for (const auto &a : args)
    if (a == "--help" || a == "-h") {
      std::fputs(help, stdout);
      return true;
    }
  return false;
}

std::string onlyFile(const Options &o, const char *cmd) {
  if (o.positional().size() != 1)
    throw UsageError{std::string(cmd) + " takes exactly one spec file, got " +
                     std::to_string(o.positional().size())};
  return o.positional()[0];
}

/// The attentions of a file: one by --name, or all of them.
std::vector<AttentionSpec> selectSpecs(const SpecFile &file, const Options &o) {
  if (o.has("name"))
    return {file.select(o.get("name"))};
  return file.attentions;
}

std::vector<std::string> splitList(const std::string &s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma == std::string::npos ? std::string::npos
                                                                   : comma - start);
    if (!item.empty())
      out.push_back(item);
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return out;
}

BlockMask readBlockMaskOption(const Options &o, const AttentionSpec &spec, int64_t n) {
  const int64_t blk = spec.blockMaskBlock(), nb = (n + blk - 1) / blk;
  NpyArray m = readNpy(o.get("block-mask"));
  if (m.shape != std::vector<int64_t>{nb, nb})
    throw ArgumentError("--block-mask " + o.get("block-mask") + " has shape " +
                        shapeString(m.shape) + ", but block " + std::to_string(blk) + " and N " +
                        std::to_string(n) + " need [" + std::to_string(nb) + ", " +
                        std::to_string(nb) + "]");
  return BlockMask::fromDense(blk, nb, m.data.data());
}

bool checkForward(const AttentionSpec &spec, int64_t B, int64_t N, const std::vector<float> &q,
                  const std::vector<float> &k, const std::vector<float> &v,
                  const BlockMask *mask, const std::vector<float> &out,
                  const std::vector<float> &lse, const std::vector<int64_t> *only) {
  // Rows to compare: all of them (or of `only`, the rows this process
  // holds) for small N, else 256 spread over them.
  std::vector<int64_t> pool = only ? *only : std::vector<int64_t>{};
  if (!only)
    for (int64_t i = 0; i < N; ++i)
      pool.push_back(i);
  std::vector<int64_t> rows;
  if (N <= 2048 || pool.size() <= 256) {
    rows = pool;
  } else {
    std::mt19937_64 rng(7);
    rows = {pool.front(), pool.back()};
    while (rows.size() < 256)
      rows.push_back(pool[rng() % pool.size()]);
  }
  std::vector<float> ref(q.size(), 0.f), refLse(lse.size(), 0.f);
  referenceForward(spec, B, N, q.data(), k.data(), v.data(), mask, ref.data(), refLse.data(), 0,
                   &rows);
  // Rows another process holds are NaN here (never written): out of the
  // comparison, and out of its count of NaN outputs.
  std::vector<float> mine, mineLse;
  if (only) {
    mine = out;
    mineLse = lse;
    std::vector<char> held(N, 0);
    for (int64_t i : *only)
      held[i] = 1;
    const int64_t width = static_cast<int64_t>(out.size()) / (B * N), H = spec.heads;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < N; ++i)
        if (!held[i]) {
          std::fill_n(&mine[(b * N + i) * width], width, 0.f);
          for (int64_t h = 0; h < H; ++h)
            mineLse[(b * H + h) * N + i] = 0.f;
        }
  }
  const Comparison c =
      compareWithReference(spec, B, N, only ? mine.data() : out.data(),
                           only ? mineLse.data() : lse.data(), ref.data(), refLse.data(), &rows);
  const double tol = toleranceFor(spec);
  const bool pass = c.within(tol);
  std::printf("check: %s: rel. error of O %.2e (tolerance %.0e; worst row %.2e), "
              "max |LSE error| %.2e, "
              "%zu rows x %d heads x %lld batch compared, NaN outputs %zu, "
              "empty-row mismatches %zu\n",
              pass ? "PASS" : "FAIL", c.relError, tol, c.maxRowError, c.maxLseError, rows.size(),
              spec.heads, static_cast<long long>(B), c.nans, c.emptyMismatch);
  return pass;
}

bool checkGradients(const AttentionSpec &spec, int64_t B, int64_t N,
                    const std::vector<float> &q, const std::vector<float> &k,
                    const std::vector<float> &v, const std::vector<float> &dout,
                    const BlockMask *mask, const std::vector<float> &dq,
                    const std::vector<float> &dk, const std::vector<float> &dv,
                    const std::vector<int64_t> *only) {
  if (N > 4096) {
    std::printf("gradient check: skipped for N > 4096 (the CPU reference is O(N^2))\n");
    return true;
  }
  std::vector<float> rq(dq.size()), rk(dk.size()), rv(dv.size());
  referenceBackward(spec, B, N, q.data(), k.data(), v.data(), dout.data(), mask, rq.data(),
                    rk.data(), rv.data());
  const double tol = 2 * toleranceFor(spec);
  bool pass = true;
  std::string line;
  // [B, N, width] restricted to the rows of `only` (all rows without it).
  auto held = [&](const std::vector<float> &full) {
    if (!only)
      return full;
    const int64_t width = static_cast<int64_t>(full.size()) / (B * N);
    std::vector<float> out;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i : *only)
        out.insert(out.end(), full.begin() + (b * N + i) * width,
                   full.begin() + (b * N + i + 1) * width);
    return out;
  };
  for (auto [name, gotAll, wantAll] : {std::tuple{"dq", &dq, &rq}, std::tuple{"dk", &dk, &rk},
                                       std::tuple{"dv", &dv, &rv}}) {
    const std::vector<float> got = held(*gotAll), want = held(*wantAll);
    size_t nans = 0;
    const double rel = relativeError(got, want, &nans);
    const double row = maxRowError(got, want, spec.headDim);
    pass = pass && nans == 0 && rel < tol && row < kRowToleranceFactor * tol;
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s%s %.2e (worst row %.2e, NaN %zu)",
                  line.empty() ? "" : ", ", name, rel, row, nans);
    line += buf;
  }
  std::printf("gradient check: %s: rel. errors %s (tolerance %.0e, a row %.0e)\n",
              pass ? "PASS" : "FAIL", line.c_str(), tol, kRowToleranceFactor * tol);
  return pass;
}

} // namespace dattn::tools
