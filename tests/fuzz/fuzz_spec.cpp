// libFuzzer target: any bytes through the spec front end. Properties:
//  - no crash, hang, leak or undefined behaviour (sanitizers);
//  - every diagnostic has a location inside the input;
//  - a spec that checks prints a canonical form that checks again, to the
//    same canonical form;
//  - the reference's predicates evaluate on every valid spec (small N).
#include "dattn/dsl.h"
#include "dattn/reference.h"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192)
    return 0; // long inputs add time, not coverage
  std::string text(reinterpret_cast<const char *>(data), size);
  dattn::ParseResult r = dattn::parseSpec(text, "fuzz.dattn");
  if (!r.ok()) {
    for (const auto &d : r.diagnostics)
      if (d.loc.line < 1 || d.loc.col < 1)
        std::abort();
    return 0;
  }
  for (const auto &spec : r.file.attentions) {
    dattn::ParseResult again = dattn::parseSpec(spec.canonical(), "canonical.dattn");
    if (!again.ok() || again.file.attentions.size() != 1 ||
        again.file.attentions[0].canonical() != spec.canonical())
      std::abort();
    if (static_cast<int64_t>(spec.heads) * spec.branches.size() > 64)
      continue;
    const int64_t n = 37;
    dattn::BlockMask mask;
    if (spec.needsBlockMask()) {
      mask.block = spec.blockMaskBlock();
      int64_t nb = (n + mask.block - 1) / mask.block;
      for (int64_t I = 0; I <= nb; ++I)
        mask.rowOffsets.push_back(I);
      for (int64_t I = 0; I < nb; ++I)
        mask.colIndices.push_back(I);
    }
    dattn::countAttendedPairs(spec, 1, n, spec.needsBlockMask() ? &mask : nullptr);
  }
  return 0;
}
