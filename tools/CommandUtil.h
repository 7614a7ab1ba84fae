// tools: what the subcommands share: --help, the one spec file, --name,
// comma-separated lists.
#pragma once

#include "Options.h"

#include "dattn/reference.h"
#include "dattn/spec.h"

#include <string>
#include <vector>

namespace dattn::tools {

/// Prints `help` and returns true if the arguments ask for it.
bool wantsHelp(const std::vector<std::string> &args, const char *help);
/// The one positional argument (a spec file); a UsageError otherwise.
std::string onlyFile(const Options &o, const char *cmd);
/// The attentions of a file: one by --name, or all of them.
std::vector<AttentionSpec> selectSpecs(const SpecFile &file, const Options &o);
/// "a,b,,c" -> {a, b, c}.
std::vector<std::string> splitList(const std::string &s);
/// --block-mask m.npy: a float32 [NB, NB] 0/1 array for `spec` at length n
/// (ArgumentError naming the file and the shapes otherwise).
BlockMask readBlockMaskOption(const Options &o, const AttentionSpec &spec, int64_t n);

/// --check of a forward run: all rows for N <= 2048, else 256 sampled rows
/// (first and last included) against the reference on the same rounded
/// inputs; prints the "check:" line and returns whether it passed.
bool checkForward(const AttentionSpec &spec, int64_t batch, int64_t n,
                  const std::vector<float> &q, const std::vector<float> &k,
                  const std::vector<float> &v, const BlockMask *mask,
                  const std::vector<float> &out, const std::vector<float> &lse,
                  const std::vector<int64_t> *only = nullptr);

/// --check of a backward run (N <= 4096, else skipped: the reference is
/// O(N^2)): dq, dk, dv against the reference at twice the forward tolerance,
/// Frobenius and worst row; prints the "gradient check:" line.
bool checkGradients(const AttentionSpec &spec, int64_t batch, int64_t n,
                    const std::vector<float> &q, const std::vector<float> &k,
                    const std::vector<float> &v, const std::vector<float> &dout,
                    const BlockMask *mask, const std::vector<float> &dq,
                    const std::vector<float> &dk, const std::vector<float> &dv,
                    const std::vector<int64_t> *only = nullptr);

} // namespace dattn::tools
