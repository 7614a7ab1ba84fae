// tools: a small command-line option parser (`--key value`, `--key=value`,
// flags), with "did you mean" for unknown options.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dattn::tools {

/// A usage error: the command prints it with a pointer to --help, exit 2.
struct UsageError {
  std::string message;
};

class Options {
public:
  /// `valued` take a value, `flags` do not. Throws UsageError on unknown
  /// options or a missing value.
  Options(const std::vector<std::string> &args, const std::vector<std::string> &valued,
          const std::vector<std::string> &flags);

  bool has(const std::string &key) const { return values_.count(key) != 0; }
  std::string get(const std::string &key, const std::string &fallback = "") const;
  int64_t getInt(const std::string &key, int64_t fallback, int64_t lo, int64_t hi) const;
  const std::vector<std::string> &positional() const { return positional_; }

private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

} // namespace dattn::tools
