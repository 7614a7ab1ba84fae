#include "Npy.h"

#include "dattn/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace dattn::tools {

namespace {

std::string headerValue(const std::string &header, const std::string &key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos)
    return "";
  size_t colon = header.find(':', k);
  if (colon == std::string::npos)
    return "";
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos)
    return "";
  if (header[start] == '(') {
    size_t end = header.find(')', start);
    return end == std::string::npos ? "" : header.substr(start, end - start + 1);
  }
  size_t end = header.find_first_of(",}", start);
  return header.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

} // namespace

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t k = 0; k < shape.size(); ++k)
    s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "]";
}

NpyArray readNpy(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ArgumentError(path + ": cannot open: " + std::strerror(errno));
  char magic[8] = {};
  in.read(magic, 8);
  if (in.gcount() != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw ArgumentError(path + ": not a NumPy .npy file (bad magic)");
  uint32_t headerLen = 0;
  unsigned char lenBytes[4] = {};
  int major = static_cast<unsigned char>(magic[6]);
  if (major == 1) {
    in.read(reinterpret_cast<char *>(lenBytes), 2);
    headerLen = lenBytes[0] | (lenBytes[1] << 8);
  } else if (major == 2 || major == 3) {
    in.read(reinterpret_cast<char *>(lenBytes), 4);
    headerLen = lenBytes[0] | (lenBytes[1] << 8) | (lenBytes[2] << 16) |
                (static_cast<uint32_t>(lenBytes[3]) << 24);
  } else {
    throw ArgumentError(path + ": unsupported .npy format version " + std::to_string(major));
  }
  if (!in || headerLen > (1u << 20))
    throw ArgumentError(path + ": truncated or implausible .npy header");
  std::string header(headerLen, '\0');
  in.read(&header[0], headerLen);
  if (!in)
    throw ArgumentError(path + ": truncated .npy header");
  std::string descr = headerValue(header, "descr");
  if (descr != "'<f4'" && descr != "'float32'")
    throw ArgumentError(path + ": dtype must be float32 ('<f4'), found " +
                        (descr.empty() ? std::string("none") : descr) +
                        "; convert with arr.astype(numpy.float32)");
  if (headerValue(header, "fortran_order") != "False")
    throw ArgumentError(path + ": Fortran-ordered arrays are not supported; save a C-ordered "
                               "array (numpy.ascontiguousarray)");
  std::string shapeText = headerValue(header, "shape");
  if (shapeText.size() < 2 || shapeText.front() != '(')
    throw ArgumentError(path + ": cannot read the shape in the .npy header");
  NpyArray arr;
  int64_t count = 1;
  std::string inner = shapeText.substr(1, shapeText.size() - 2);
  std::stringstream ss(inner);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(' ');
    if (a == std::string::npos)
      continue;
    char *end = nullptr;
    long long v = std::strtoll(item.c_str() + a, &end, 10);
    if (v < 0 || v > (int64_t(1) << 40))
      throw ArgumentError(path + ": bad dimension '" + item + "' in the .npy shape");
    arr.shape.push_back(v);
    count *= v;
    if (count > (int64_t(1) << 34))
      throw ArgumentError(path + ": array too large (" + shapeText + ")");
  }
  arr.data.resize(static_cast<size_t>(count));
  in.read(reinterpret_cast<char *>(arr.data.data()), count * 4);
  if (in.gcount() != count * 4)
    throw ArgumentError(path + ": data is truncated: shape " + shapeString(arr.shape) +
                        " needs " + std::to_string(count * 4) + " bytes, found " +
                        std::to_string(in.gcount()));
  return arr;
}

void writeNpy(const std::string &path, const std::vector<int64_t> &shape, const float *data) {
  std::string dims;
  int64_t count = 1;
  for (int64_t d : shape) {
    dims += std::to_string(d) + ", ";
    count *= d;
  }
  if (!shape.empty())
    dims.resize(dims.size() - 1); // "(a, b,)": a valid tuple, and "(a,)" for 1-D
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad so that magic + length + header is a multiple of 64, ending in '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      throw ArgumentError(path + ": cannot write: " + std::strerror(errno));
    out.write("\x93NUMPY\x01\x00", 8);
    unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                            static_cast<unsigned char>(header.size() >> 8)};
    out.write(reinterpret_cast<const char *>(len), 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(reinterpret_cast<const char *>(data), count * 4);
    if (!out)
      throw ArgumentError(path + ": write failed: " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw ArgumentError(path + ": cannot rename the written file into place: " +
                        std::strerror(errno));
  }
}

} // namespace dattn::tools
