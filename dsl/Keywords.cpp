#include "Keywords.h"

#include <algorithm>

namespace dattn::dsl {

const std::vector<std::string> &settingKeys() {
  static const std::vector<std::string> keys = {
      "heads", "kv_heads", "head_dim", "dtype", "precision", "scale", "causal", "ring",
      "ring_layout"};
  return keys;
}

bool isSettingKey(const std::string &s) {
  const auto &k = settingKeys();
  return std::find(k.begin(), k.end(), s) != k.end();
}

const std::vector<std::string> &patternNames() {
  static const std::vector<std::string> names = {
      "dilated", "window", "global", "dense",
      "random",  "dilated_blocks", "hierarchical", "block_mask"};
  return names;
}

std::string joinedPatternNames() {
  std::string out;
  for (const auto &n : patternNames())
    out += (out.empty() ? "" : ", ") + n;
  return out;
}

} // namespace dattn::dsl
