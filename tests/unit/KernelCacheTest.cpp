// The kernel cache with a fake compiler (no GPU, no NVRTC): hits, misses,
// key changes, corrupt entries, concurrent compiles of one kernel.
#include "KernelCache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

namespace dattn::rt {
namespace {

namespace fs = std::filesystem;

struct FakeCompiler {
  std::atomic<int> calls{0};
  CompileFn fn() {
    return [this](const std::string &src, const std::string &name, const std::string &arch) {
      ++calls;
      CompileOutput o;
      o.ptx = "// ptx of " + name + " for " + arch;
      std::string bin = "\x7f" "ELF" + src + arch;
      o.cubin.assign(bin.begin(), bin.end());
      o.seconds = 0.5;
      return o;
    };
  }
};

/// An empty cache folder of this process, removed with the test.
struct FreshDir {
  std::string path;
  explicit FreshDir(const std::string &name)
      : path(::testing::TempDir() + "/dattn_cache_" + name + "_" + std::to_string(getpid())) {
    fs::remove_all(path);
  }
  ~FreshDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  operator const std::string &() const { return path; }
};

TEST(KernelCache, MissThenMemoryThenDiskHit) {
  FakeCompiler fc;
  const FreshDir dir("hits");
  KernelCache c(dir, fc.fn(), "sig1");
  auto a = c.get("source A", "k", "sm_90");
  EXPECT_EQ(a->origin, CachedKernel::Origin::Compiled);
  auto b = c.get("source A", "k", "sm_90");
  EXPECT_EQ(b->origin, CachedKernel::Origin::Memory);
  EXPECT_EQ(fc.calls, 1);
  KernelCache fresh(dir, fc.fn(), "sig1"); // a new process, as far as memory goes
  auto d = fresh.get("source A", "k", "sm_90");
  EXPECT_EQ(d->origin, CachedKernel::Origin::Disk);
  EXPECT_EQ(d->cubin, a->cubin);
  EXPECT_EQ(d->compileSeconds, 0.5);
  EXPECT_EQ(fc.calls, 1);
  EXPECT_TRUE(fs::exists(fs::path(d->folder) / "kernel.cu"));
  EXPECT_NE(d->folder.find("/sm_90/"), std::string::npos);
}

TEST(KernelCache, KeyCoversSourceArchAndCompiler) {
  FakeCompiler fc;
  const FreshDir dir("keys");
  KernelCache c(dir, fc.fn(), "nvrtc-13.0");
  c.get("source A", "k", "sm_90");
  c.get("source B", "k", "sm_90");
  c.get("source A", "k", "sm_80");
  c.get("source A", "other", "sm_90");
  EXPECT_EQ(fc.calls, 4);
  KernelCache newer(dir, fc.fn(), "nvrtc-13.1");
  EXPECT_EQ(newer.get("source A", "k", "sm_90")->origin, CachedKernel::Origin::Compiled);
  EXPECT_EQ(fc.calls, 5);
}

TEST(KernelCache, CorruptEntryIsReportedAndRebuilt) {
  FakeCompiler fc;
  const FreshDir dir("corrupt");
  std::string folder;
  {
    KernelCache c(dir, fc.fn(), "sig");
    folder = c.get("source", "k", "sm_80")->folder;
  }
  // Truncate the cubin, as a crash or a full disk could.
  fs::resize_file(fs::path(folder) / "kernel.cubin", 3);
  std::vector<std::string> notes;
  KernelCache c(dir, fc.fn(), "sig", 8, [&](const std::string &m) { notes.push_back(m); });
  auto k = c.get("source", "k", "sm_80");
  EXPECT_EQ(k->origin, CachedKernel::Origin::Compiled);
  EXPECT_EQ(fc.calls, 2);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("is corrupt"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("truncated"), std::string::npos) << notes[0];
  EXPECT_EQ(c.stats().rebuilt, 1);
  // The rebuilt entry is whole again.
  KernelCache again(dir, fc.fn(), "sig");
  EXPECT_EQ(again.get("source", "k", "sm_80")->origin, CachedKernel::Origin::Disk);
  // A missing metadata file is corrupt too.
  fs::remove(fs::path(folder) / "meta.txt");
  KernelCache third(dir, fc.fn(), "sig");
  EXPECT_EQ(third.get("source", "k", "sm_80")->origin, CachedKernel::Origin::Compiled);
}

TEST(KernelCache, ConcurrentProcessesCompilingOneKernelBothSucceed) {
  const FreshDir dir("race");
  const int kProcs = 4;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      FakeCompiler fc;
      KernelCache c(dir, fc.fn(), "sig");
      auto k = c.get("shared source", "k", "sm_90");
      _exit(k && k->cubin.size() > 4 ? 0 : 1);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  FakeCompiler fc;
  KernelCache c(dir, fc.fn(), "sig");
  EXPECT_EQ(c.get("shared source", "k", "sm_90")->origin, CachedKernel::Origin::Disk);
  // No temporary folders are left behind.
  for (const auto &e : fs::recursive_directory_iterator(dir.path))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(KernelCache, MemoryLevelIsBounded) {
  FakeCompiler fc;
  KernelCache c("", fc.fn(), "sig", 2); // memory only
  c.get("a", "k", "sm_80");
  c.get("b", "k", "sm_80");
  c.get("c", "k", "sm_80"); // evicts a
  EXPECT_EQ(c.get("c", "k", "sm_80")->origin, CachedKernel::Origin::Memory);
  EXPECT_EQ(c.get("a", "k", "sm_80")->origin, CachedKernel::Origin::Compiled);
  EXPECT_EQ(fc.calls, 4);
}

TEST(KernelCache, UnwritableFolderStillCompiles) {
  FakeCompiler fc;
  std::vector<std::string> notes;
  KernelCache c("/proc/dattn-cannot-write-here", fc.fn(), "sig", 4,
                [&](const std::string &m) { notes.push_back(m); });
  auto k = c.get("src", "k", "sm_80");
  EXPECT_EQ(k->origin, CachedKernel::Origin::Compiled);
  EXPECT_FALSE(k->cubin.empty());
  // The lost disk level is reported, naming the folder, not silently skipped.
  ASSERT_FALSE(notes.empty());
  EXPECT_NE(notes[0].find("/proc/dattn-cannot-write-here"), std::string::npos) << notes[0];
}

} // namespace
} // namespace dattn::rt
