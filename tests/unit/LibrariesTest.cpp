// runtime::openLibrary, the search every dlopen'ed library goes through
// (libcuda, libnvrtc 13 and 12, libnccl): a copy the process already has
// comes first, then the folders in order; a miss names every place tried.
// The probe is a library of this build that nothing links
// (tests/unit/probe), in a folder of its own.
#include "Libraries.h"

#include "dattn/error.h"
#include "dattn/runtime.h"

#include <gtest/gtest.h>

#include <dlfcn.h>

namespace dattn::rt {
namespace {

const std::string kProbe = "libdattn_probe.so";

TEST(Libraries, SearchOrderAlreadyLoadedThenTheFolders) {
  std::string path;
  // Not loaded yet, and in none of these folders: the error lists them.
  try {
    openLibrary({kProbe}, {"/nonexistent-a/", "/nonexistent-b"}, "the probe", path);
    FAIL() << "loaded the probe from nowhere";
  } catch (const Error &e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cannot load the probe"), std::string::npos) << m;
    EXPECT_NE(m.find("/nonexistent-a/" + kProbe), std::string::npos) << m;
    EXPECT_NE(m.find("/nonexistent-b/" + kProbe), std::string::npos) << m; // '/' added
  }
  // Found in the first folder that has it.
  void *h = openLibrary({"libnot-there.so", kProbe}, {"/nonexistent-a/", DATTN_PROBE_DIR},
                        "the probe", path);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(path, std::string(DATTN_PROBE_DIR) + "/" + kProbe);
  auto answer = reinterpret_cast<int (*)()>(dlsym(h, "dattn_probe_answer"));
  ASSERT_NE(answer, nullptr);
  EXPECT_EQ(answer(), 42);
  // Loaded now: found again without any folder, as the same library.
  void *again = openLibrary({kProbe}, {}, "the probe", path);
  EXPECT_EQ(again, h);
  EXPECT_EQ(path, kProbe + " (already loaded)");
  dlclose(again);
  dlclose(h);
}

TEST(Libraries, AddedFoldersKeepTheirOrderOnce) {
  const std::vector<std::string> before = libraryDirs();
  addLibraryDirs({"/tmp/dattn-libs-a", "", "/tmp/dattn-libs-b", "/tmp/dattn-libs-a"});
  std::vector<std::string> want = before;
  for (const std::string d : {"/tmp/dattn-libs-a", "/tmp/dattn-libs-b"})
    if (std::find(want.begin(), want.end(), d) == want.end())
      want.push_back(d);
  EXPECT_EQ(libraryDirs(), want);
}

} // namespace
} // namespace dattn::rt
