#include "CommandUtil.h"
#include "Npy.h"

#include "dattn/error.h"

#include <cstdio>

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

} // namespace dattn::tools
