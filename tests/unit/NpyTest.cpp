// .npy reading and writing, including the files a user could get wrong.
#include "Npy.h"

#include "dattn/error.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace dattn::tools {
namespace {

std::string tempPath(const std::string &name) {
  return ::testing::TempDir() + "/dattn_npy_" + name;
}

TEST(Npy, RoundTrip) {
  std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f};
  std::string p = tempPath("rt.npy");
  writeNpy(p, {2, 3}, data.data());
  NpyArray a = readNpy(p);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, data);
  writeNpy(p, {6}, data.data());
  EXPECT_EQ(readNpy(p).shape, (std::vector<int64_t>{6}));
  // The header is padded to a multiple of 64 bytes, as NumPy requires.
  std::ifstream in(p, std::ios::binary | std::ios::ate);
  EXPECT_EQ((static_cast<long>(in.tellg()) - 6 * 4) % 64, 0);
}

void writeRaw(const std::string &p, const std::string &bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

std::string header(const std::string &dict) {
  std::string h = dict;
  size_t total = 10 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  h += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(h.size() & 0xff);
  out += static_cast<char>(h.size() >> 8);
  return out + h;
}

void expectError(const std::string &bytes, const std::string &fragment) {
  std::string p = tempPath("bad.npy");
  writeRaw(p, bytes);
  try {
    readNpy(p);
    FAIL() << "accepted a bad file; expected: " << fragment;
  } catch (const ArgumentError &e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Npy, BadFilesAreNamedAndExplained) {
  expectError("hello", "not a NumPy .npy file");
  expectError(header("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }") +
                  std::string(16, '\0'),
              "dtype must be float32");
  expectError(header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }") +
                  std::string(16, '\0'),
              "Fortran-ordered");
  expectError(header("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }") +
                  std::string(10, '\0'),
              "data is truncated");
  EXPECT_THROW(readNpy(tempPath("does_not_exist.npy")), ArgumentError);
}

} // namespace
} // namespace dattn::tools
