// runtime: the kernel cache. An in-memory LRU in front of a disk cache at
//   <root>/<dattn version>/<arch>/<key>/{kernel.cu, kernel.ptx, kernel.cubin, meta.txt}
// The key hashes everything that determines the binary: kernel name,
// generated source, the templates' hash, the compiler's signature (NVRTC
// version and options) and the arch. Entries are written into a temporary
// folder and renamed into place, so a reader never sees half an entry and
// two processes compiling the same kernel both succeed (the loser's copy is
// dropped). An entry whose files do not match its metadata is reported,
// removed and rebuilt.
#pragma once

#include "Nvrtc.h"

#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace dattn::rt {

struct CachedKernel {
  std::string key;
  std::string source, ptx;
  std::vector<char> cubin;
  double compileSeconds = 0; ///< of the compile that produced it
  enum class Origin { Compiled, Memory, Disk } origin = Origin::Compiled;
  std::string folder; ///< its disk entry ("" if the disk cache is off)
};

using CompileFn =
    std::function<CompileOutput(const std::string &source, const std::string &name,
                                const std::string &arch)>;
using LogFn = std::function<void(const std::string &)>;

class KernelCache {
public:
  /// `root` "" disables the disk level. `signature` names the compiler
  /// (version and options); `log` receives notes such as rebuilt entries.
  KernelCache(std::string root, CompileFn compile, std::string signature,
              size_t memoryEntries = 64, LogFn log = nullptr);

  /// The kernel for (source, name, arch): from memory, disk, or compiled.
  std::shared_ptr<const CachedKernel> get(const std::string &source, const std::string &name,
                                          const std::string &arch);

  std::string keyOf(const std::string &source, const std::string &name,
                    const std::string &arch) const;

  struct Stats {
    int memoryHits = 0, diskHits = 0, compiles = 0, rebuilt = 0;
  };
  Stats stats() const;

private:
  std::shared_ptr<const CachedKernel> loadFromDisk(const std::string &dir, const std::string &key,
                                                  std::string &problem) const;
  void storeToDisk(const std::string &dir, const CachedKernel &k, const std::string &name);
  void remember(const std::shared_ptr<const CachedKernel> &k);

  std::string root_;
  CompileFn compile_;
  std::string signature_;
  size_t capacity_;
  LogFn log_;
  mutable std::mutex mu_;
  std::list<std::shared_ptr<const CachedKernel>> lru_; ///< most recent first
  std::unordered_map<std::string, std::list<std::shared_ptr<const CachedKernel>>::iterator> index_;
  Stats stats_;
};

/// 128-bit content hash (two independent 64-bit FNV-1a lanes), as 32 hex digits.
std::string contentHash(const std::string &data);

} // namespace dattn::rt
