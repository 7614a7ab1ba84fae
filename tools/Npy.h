// tools: NumPy .npy files (format 1.0-3.0), float32, C order, little endian.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dattn::tools {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

/// Reads a float32 array; throws ArgumentError naming the file and what is
/// wrong (not a .npy, wrong dtype, Fortran order, truncated data).
NpyArray readNpy(const std::string &path);

/// Writes a float32 array atomically (temporary file, then rename), so a
/// failed write never leaves a half-written file where the user expects one.
void writeNpy(const std::string &path, const std::vector<int64_t> &shape, const float *data);

std::string shapeString(const std::vector<int64_t> &shape);

} // namespace dattn::tools
