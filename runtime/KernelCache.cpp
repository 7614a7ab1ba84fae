#include "KernelCache.h"

#include "EmbeddedTemplates.h"

#include "dattn/error.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <unistd.h>

namespace fs = std::filesystem;

namespace dattn::rt {

namespace {

const char *kLayoutVersion = "dattn-0.1";

std::string readFile(const fs::path &p, bool &ok) {
  std::ifstream in(p, std::ios::binary);
  ok = static_cast<bool>(in);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const fs::path &p, const void *data, size_t size) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char *>(data), static_cast<std::streamsize>(size));
  if (!out)
    throw Error("kernel cache: cannot write " + p.string() + ": " + std::strerror(errno));
}

} // namespace

std::string contentHash(const std::string &data) {
  uint64_t a = 1469598103934665603ULL, b = 0x84222325cbf29ce4ULL;
  for (unsigned char c : data) {
    a = (a ^ c) * 1099511628211ULL;
    b = (b ^ (c + 0x5bu)) * 0x100000001b3ULL;
    b ^= b >> 29;
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b));
  return buf;
}

KernelCache::KernelCache(std::string root, CompileFn compile, std::string signature,
                         size_t memoryEntries, LogFn log)
    : root_(std::move(root)), compile_(std::move(compile)), signature_(std::move(signature)),
      capacity_(memoryEntries ? memoryEntries : 1), log_(std::move(log)) {}

std::string KernelCache::keyOf(const std::string &source, const std::string &name,
                               const std::string &arch) const {
  return contentHash(std::string(kLayoutVersion) + '\0' + name + '\0' + arch + '\0' + signature_ +
                     '\0' + kTemplatesHash + '\0' + source);
}

KernelCache::Stats KernelCache::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  return stats_;
}

void KernelCache::remember(const std::shared_ptr<const CachedKernel> &k) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = index_.find(k->key);
  if (it != index_.end())
    lru_.erase(it->second);
  lru_.push_front(k);
  index_[k->key] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back()->key);
    lru_.pop_back();
  }
}

std::shared_ptr<const CachedKernel> KernelCache::loadFromDisk(const std::string &dir,
                                                             const std::string &key,
                                                             std::string &problem) const {
  bool ok = false;
  std::string meta = readFile(fs::path(dir) / "meta.txt", ok);
  if (!ok) {
    problem = "meta.txt is missing";
    return nullptr;
  }
  std::map<std::string, std::string> fields;
  std::istringstream ms(meta);
  for (std::string line; std::getline(ms, line);) {
    size_t eq = line.find('=');
    if (eq != std::string::npos)
      fields[line.substr(0, eq)] = line.substr(eq + 1);
  }
  if (fields["key"] != key) {
    problem = "meta.txt names key '" + fields["key"] + "'";
    return nullptr;
  }
  auto k = std::make_shared<CachedKernel>();
  k->key = key;
  k->folder = dir;
  k->origin = CachedKernel::Origin::Disk;
  std::string cubin = readFile(fs::path(dir) / "kernel.cubin", ok);
  if (!ok || std::to_string(cubin.size()) != fields["cubin_bytes"] ||
      contentHash(cubin) != fields["cubin_hash"]) {
    problem = "kernel.cubin is missing, truncated or altered (" + std::to_string(cubin.size()) +
              " bytes, metadata says " + fields["cubin_bytes"] + ")";
    return nullptr;
  }
  k->ptx = readFile(fs::path(dir) / "kernel.ptx", ok);
  if (!ok || contentHash(k->ptx) != fields["ptx_hash"]) {
    problem = "kernel.ptx is missing or altered";
    return nullptr;
  }
  k->source = readFile(fs::path(dir) / "kernel.cu", ok);
  k->cubin.assign(cubin.begin(), cubin.end());
  k->compileSeconds = std::atof(fields["compile_seconds"].c_str());
  return k;
}

void KernelCache::storeToDisk(const std::string &dir, const CachedKernel &k,
                              const std::string &name) {
  static std::atomic<int> counter{0};
  fs::path tmp = dir + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec)
    throw Error("kernel cache: cannot create " + tmp.string() + ": " + ec.message());
  writeFile(tmp / "kernel.cu", k.source.data(), k.source.size());
  writeFile(tmp / "kernel.ptx", k.ptx.data(), k.ptx.size());
  writeFile(tmp / "kernel.cubin", k.cubin.data(), k.cubin.size());
  std::string cubin(k.cubin.begin(), k.cubin.end());
  std::ostringstream meta;
  meta << "key=" << k.key << "\nname=" << name << "\ncubin_bytes=" << k.cubin.size()
       << "\ncubin_hash=" << contentHash(cubin) << "\nptx_hash=" << contentHash(k.ptx)
       << "\ncompile_seconds=" << k.compileSeconds << "\nsignature=" << signature_
       << "\ntemplates=" << kTemplatesHash << "\n";
  std::string m = meta.str();
  writeFile(tmp / "meta.txt", m.data(), m.size()); // last: its presence marks completeness
  fs::rename(tmp, dir, ec);
  if (ec) {
    // Another process stored the same key first: theirs is as good as ours.
    fs::remove_all(tmp, ec);
  }
}

std::shared_ptr<const CachedKernel> KernelCache::get(const std::string &source,
                                                     const std::string &name,
                                                     const std::string &arch) {
  const std::string key = keyOf(source, name, arch);
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      auto k = *it->second;
      lru_.splice(lru_.begin(), lru_, it->second);
      ++stats_.memoryHits;
      auto hit = std::make_shared<CachedKernel>(*k);
      hit->origin = CachedKernel::Origin::Memory;
      return hit;
    }
  }
  std::string dir;
  if (!root_.empty()) {
    dir = (fs::path(root_) / kLayoutVersion / arch / key).string();
    std::error_code ec;
    if (fs::exists(dir, ec)) {
      std::string problem;
      if (auto k = loadFromDisk(dir, key, problem)) {
        remember(k);
        std::lock_guard<std::mutex> g(mu_);
        ++stats_.diskHits;
        return k;
      }
      if (log_)
        log_("kernel cache: entry " + dir + " is corrupt (" + problem + "); rebuilding it");
      // Move it aside first so a concurrent reader never sees it half-deleted.
      fs::path trash = dir + ".corrupt." + std::to_string(getpid());
      fs::rename(dir, trash, ec);
      fs::remove_all(ec ? fs::path(dir) : trash, ec);
      std::lock_guard<std::mutex> g(mu_);
      ++stats_.rebuilt;
    }
  }
  CompileOutput out = compile_(source, name, arch);
  auto k = std::make_shared<CachedKernel>();
  k->key = key;
  k->source = source;
  k->ptx = std::move(out.ptx);
  k->cubin = std::move(out.cubin);
  k->compileSeconds = out.seconds;
  k->origin = CachedKernel::Origin::Compiled;
  k->folder = dir;
  if (!dir.empty()) {
    std::error_code ec;
    fs::create_directories(fs::path(dir).parent_path(), ec);
    try {
      storeToDisk(dir, *k, name);
    } catch (const Error &e) {
      // A read-only or full cache folder must not stop the run.
      if (log_)
        log_(std::string(e.what()) + " (continuing without the disk cache)");
    }
  }
  remember(k);
  {
    std::lock_guard<std::mutex> g(mu_);
    ++stats_.compiles;
  }
  return k;
}

} // namespace dattn::rt
