#include "Options.h"

#include "dattn/dsl.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace dattn::tools {

namespace {
bool contains(const std::vector<std::string> &v, const std::string &s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
} // namespace

Options::Options(const std::vector<std::string> &args, const std::vector<std::string> &valued,
                 const std::vector<std::string> &flags) {
  for (size_t k = 0; k < args.size(); ++k) {
    const std::string &a = args[k];
    if (a.size() < 2 || a.compare(0, 2, "--") != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string key = a.substr(2), value;
    bool inlineValue = false;
    size_t eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      inlineValue = true;
    }
    if (contains(flags, key)) {
      if (inlineValue)
        throw UsageError{"option --" + key + " takes no value"};
      values_[key] = "1";
    } else if (contains(valued, key)) {
      if (!inlineValue) {
        if (k + 1 >= args.size())
          throw UsageError{"option --" + key + " needs a value"};
        value = args[++k];
      }
      values_[key] = value;
    } else {
      std::vector<std::string> known = valued;
      known.insert(known.end(), flags.begin(), flags.end());
      std::string best = closestMatch(key, known);
      std::string hint = best.empty() ? "" : ", did you mean --" + best + "?";
      throw UsageError{"unknown option --" + key + hint};
    }
  }
}

std::string Options::get(const std::string &key, const std::string &fallback) const {
  auto it = values_.find(key);
  return it == values_.end() ? fallback : it->second;
}

int64_t Options::getInt(const std::string &key, int64_t fallback, int64_t lo, int64_t hi) const {
  auto it = values_.find(key);
  if (it == values_.end())
    return fallback;
  errno = 0;
  char *end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (errno != 0 || end == it->second.c_str() || *end != '\0')
    throw UsageError{"--" + key + " must be an integer, got '" + it->second + "'"};
  if (v < lo || v > hi)
    throw UsageError{"--" + key + " must be in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got " + it->second};
  return v;
}

} // namespace dattn::tools
