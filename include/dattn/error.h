// dattn: the one exception type. The library never calls exit(); every error
// is an Error whose message says what failed and where.
#pragma once

#include <stdexcept>
#include <string>

namespace dattn {

/// Base of all dattn errors. `what()` is complete on its own: it names the
/// stage, the object (file:line:col, argument name, shape) and the reason.
class Error : public std::runtime_error {
public:
  explicit Error(const std::string &msg) : std::runtime_error(msg) {}
};

/// A spec file that does not parse or check; what() holds every diagnostic.
class SpecError : public Error {
public:
  using Error::Error;
};

/// Wrong shapes, dtypes or files given to run-time entry points.
class ArgumentError : public Error {
public:
  using Error::Error;
};

} // namespace dattn
