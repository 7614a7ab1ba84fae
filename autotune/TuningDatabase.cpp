// The tuning database: JSON entries keyed by signature and kernel key,
// loaded leniently (anything wrong is reported and skipped), saved
// atomically under a lock and merged with the file's current contents.
#include "dattn/error.h"
#include "dattn/tuning.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <fstream>
#include <sstream>

namespace dattn {

std::string TuningSignature::describe() const {
  return gpu + " (" + std::to_string(multiprocessors) + " SMs, sm_" + std::to_string(sm) +
         "), driver " + std::to_string(driverMajor) + ", NVRTC " + nvrtc + ", templates " +
         templates.substr(0, 12);
}

std::string TuningKey::str() const {
  return stage + "/" + family + "/" + dtype + "/d" + std::to_string(headDim) + "/" + kind + "/" +
         geometry + "/n" + std::to_string(seqBucket) + (causal ? "/causal" : "");
}

TuningKey tuningKey(const AttentionPlan &plan, const BranchPlan &b, const std::string &stage,
                    const std::string &family, int64_t seqLen) {
  TuningKey k;
  k.stage = stage;
  k.family = family;
  k.dtype = toString(plan.dtype);
  k.headDim = plan.headDim;
  k.causal = plan.causal;
  k.seqBucket = plan::nextPowerOfTwo(seqLen);
  if (b.kind == BranchKind::Strided) {
    k.kind = "strided";
    const int64_t w = plan::segmentLength(b.segment, seqLen);
    k.geometry = "rows" + std::to_string(plan::nextPowerOfTwo((w + b.dilation - 1) / b.dilation));
  } else {
    k.kind = "blocks";
    int64_t minBlock = 0;
    for (const MemberPlan &m : b.members)
      if (m.block && (!minBlock || m.block < minBlock))
        minBlock = m.block;
    k.geometry = minBlock ? "block" + std::to_string(minBlock) : "noblock";
  }
  return k;
}

namespace {

llvm::json::Object configJson(const KernelConfig &c) {
  return llvm::json::Object{{"block_m", c.blockM},
                            {"block_n", c.blockN},
                            {"row_tiles", c.rowTilesPerWarp},
                            {"atomic_dq", c.atomicDq}};
}

/// A time in ms; null where none was measured (JSON has no infinity).
llvm::json::Value msJson(double ms) {
  return std::isfinite(ms) ? llvm::json::Value(ms) : llvm::json::Value(nullptr);
}

llvm::json::Value entryJson(const TuningEntry &e) {
  const TuningSignature &s = e.signature;
  const TuningKey &k = e.key;
  return llvm::json::Object{
      {"signature",
       llvm::json::Object{{"gpu", s.gpu},
                          {"multiprocessors", s.multiprocessors},
                          {"sm", s.sm},
                          {"driver_major", s.driverMajor},
                          {"nvrtc", s.nvrtc},
                          {"templates", s.templates}}},
      {"key", llvm::json::Object{{"stage", k.stage},
                                 {"family", k.family},
                                 {"dtype", k.dtype},
                                 {"head_dim", k.headDim},
                                 {"kind", k.kind},
                                 {"geometry", k.geometry},
                                 {"seq_bucket", k.seqBucket},
                                 {"causal", k.causal}}},
      {"config_family", e.family.empty() ? k.family : e.family},
      {"config", configJson(e.config)},
      {"median_ms", msJson(e.medianMs)},
      {"runner_up", configJson(e.runnerUp)},
      {"runner_up_ms", msJson(e.runnerUpMs)},
      {"heuristic_ms", msJson(e.heuristicMs)}};
}

/// Reads a time written by msJson (null: not measured, infinity).
bool msField(const llvm::json::Object &o, const char *name, double *out, std::string *why) {
  const llvm::json::Value *v = o.get(name);
  if (v && v->getAsNull()) {
    *out = std::numeric_limits<double>::infinity();
    return true;
  }
  std::optional<double> x = v ? v->getAsNumber() : std::nullopt;
  if (!x || !(*x >= 0)) {
    *why = std::string("field '") + name + "' is missing or not a time in ms";
    return false;
  }
  *out = *x;
  return true;
}

/// Reads one field; false (with *why) if absent or of another type.
template <class T>
bool field(const llvm::json::Object &o, const char *name, T *out, std::string *why) {
  const llvm::json::Value *v = o.get(name);
  std::optional<T> x;
  if (v) {
    if constexpr (std::is_same_v<T, std::string>) {
      if (auto s = v->getAsString())
        x = s->str();
    } else if constexpr (std::is_same_v<T, bool>) {
      x = v->getAsBoolean();
    } else if constexpr (std::is_same_v<T, double>) {
      x = v->getAsNumber();
    } else {
      if (auto i = v->getAsInteger())
        x = static_cast<T>(*i);
    }
  }
  if (!x) {
    *why = std::string("field '") + name + "' is missing or not of the right type";
    return false;
  }
  *out = *x;
  return true;
}

bool parseConfig(const llvm::json::Object *o, KernelConfig *c, std::string *why) {
  if (!o) {
    *why = "a configuration is missing";
    return false;
  }
  return field(*o, "block_m", &c->blockM, why) && field(*o, "block_n", &c->blockN, why) &&
         field(*o, "row_tiles", &c->rowTilesPerWarp, why) &&
         field(*o, "atomic_dq", &c->atomicDq, why);
}

std::optional<TuningEntry> parseEntry(const llvm::json::Value &v, std::string *why) {
  const llvm::json::Object *o = v.getAsObject();
  if (!o) {
    *why = "an entry is not a JSON object";
    return std::nullopt;
  }
  TuningEntry e;
  const llvm::json::Object *s = o->getObject("signature"), *k = o->getObject("key");
  if (!s || !k) {
    *why = "an entry lacks its signature or key";
    return std::nullopt;
  }
  bool ok = field(*s, "gpu", &e.signature.gpu, why) &&
            field(*s, "multiprocessors", &e.signature.multiprocessors, why) &&
            field(*s, "sm", &e.signature.sm, why) &&
            field(*s, "driver_major", &e.signature.driverMajor, why) &&
            field(*s, "nvrtc", &e.signature.nvrtc, why) &&
            field(*s, "templates", &e.signature.templates, why) &&
            field(*k, "stage", &e.key.stage, why) && field(*k, "family", &e.key.family, why) &&
            field(*k, "dtype", &e.key.dtype, why) && field(*k, "head_dim", &e.key.headDim, why) &&
            field(*k, "kind", &e.key.kind, why) && field(*k, "geometry", &e.key.geometry, why) &&
            field(*k, "seq_bucket", &e.key.seqBucket, why) &&
            field(*k, "causal", &e.key.causal, why) &&
            parseConfig(o->getObject("config"), &e.config, why) &&
            field(*o, "median_ms", &e.medianMs, why) &&
            parseConfig(o->getObject("runner_up"), &e.runnerUp, why) &&
            msField(*o, "runner_up_ms", &e.runnerUpMs, why) &&
            msField(*o, "heuristic_ms", &e.heuristicMs, why);
  if (!ok)
    return std::nullopt;
  // Written since the tuner compares families (older entries: the key's).
  if (const llvm::json::Value *f = o->get("config_family")) {
    if (!f->getAsString() || f->getAsString()->empty()) {
      *why = "an entry's config_family is not a family name";
      return std::nullopt;
    }
    e.family = f->getAsString()->str();
  } else {
    e.family = e.key.family;
  }
  return e;
}

/// The file's entries as JSON values (empty if missing); *error if the file
/// exists but is not a database.
std::vector<llvm::json::Value> readEntries(const std::string &path, std::string *error) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return {};
  std::stringstream ss;
  ss << in.rdbuf();
  llvm::Expected<llvm::json::Value> doc = llvm::json::parse(ss.str());
  if (!doc) {
    *error = path + " is not valid JSON (" + llvm::toString(doc.takeError()) + ")";
    return {};
  }
  const llvm::json::Object *root = doc->getAsObject();
  const llvm::json::Array *entries = root ? root->getArray("entries") : nullptr;
  if (!entries) {
    *error = path + " has no \"entries\" array";
    return {};
  }
  return std::vector<llvm::json::Value>(entries->begin(), entries->end());
}

} // namespace

std::string tuningEntryJson(const TuningEntry &e) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << entryJson(e);
  return os.str();
}

TuningDatabase TuningDatabase::load(const std::string &path, const StageSignatures &current,
                                    std::vector<std::string> *report) {
  TuningDatabase db;
  db.signature_ = current;
  std::string error;
  const std::vector<llvm::json::Value> entries = readEntries(path, &error);
  if (!error.empty()) {
    if (report)
      report->push_back("tuning database " + error + ": ignored");
    return db;
  }
  int otherGpus = 0;
  // Stale entries are reported once per signature they carry (a shipped
  // file after a template change would otherwise print a line per entry),
  // against the current signature of their stage.
  struct Stale {
    TuningSignature measured, now;
    std::vector<size_t> entries;
  };
  std::vector<Stale> stale;
  for (size_t x = 0; x < entries.size(); ++x) {
    std::string why;
    std::optional<TuningEntry> e = parseEntry(entries[x], &why);
    if (!e) {
      if (report)
        report->push_back(path + ": entry " + std::to_string(x) + " ignored: " + why);
      continue;
    }
    const TuningSignature &s = e->signature, &now = current.of(e->key.stage);
    if (!s.sameGpu(now)) {
      ++otherGpus; // another machine's entries: kept in the file, not used here
      continue;
    }
    if (s != now) {
      auto it = std::find_if(stale.begin(), stale.end(), [&](const Stale &g) {
        return g.measured == s && g.now == now;
      });
      if (it == stale.end())
        stale.push_back({s, now, {x}});
      else
        it->entries.push_back(x);
      continue;
    }
    db.entries_[e->key.str()] = *e;
  }
  (void)otherGpus;
  if (report)
    for (const Stale &g : stale) {
      const std::vector<size_t> &which = g.entries;
      report->push_back(path + ": " +
                        (which.size() == 1 ? "entry " + std::to_string(which[0]) + " is"
                                           : std::to_string(which.size()) + " entries (from " +
                                                 std::to_string(which[0]) + ") are") +
                        " stale: measured with " + g.measured.describe() + ", now " +
                        g.now.describe() + "; ignored until `dattn tune` measures again");
    }
  return db;
}

std::vector<std::pair<TuningSignature, size_t>>
TuningDatabase::signaturesIn(const std::string &path, std::string *error) {
  std::vector<std::pair<TuningSignature, size_t>> out;
  error->clear();
  const std::vector<llvm::json::Value> entries = readEntries(path, error);
  if (!error->empty())
    return {};
  for (const llvm::json::Value &v : entries) {
    std::string why;
    std::optional<TuningEntry> e = parseEntry(v, &why);
    if (!e)
      continue;
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const auto &x) { return x.first == e->signature; });
    if (it == out.end())
      out.push_back({e->signature, 1});
    else
      ++it->second;
  }
  return out;
}

const TuningEntry *TuningDatabase::find(const TuningKey &key) const {
  auto it = entries_.find(key.str());
  return it == entries_.end() ? nullptr : &it->second;
}

void TuningDatabase::put(const TuningEntry &e) { entries_[e.key.str()] = e; }

void TuningDatabase::save(const std::string &path) const {
  // One writer at a time (flock), so that read-merge-write cannot lose a
  // concurrent writer's entries; the rename keeps readers from ever seeing
  // half a file.
  const std::string lockPath = path + ".lock";
  const int lock = ::open(lockPath.c_str(), O_CREAT | O_RDWR, 0644);
  if (lock < 0)
    throw Error("cannot write the tuning database: cannot open " + lockPath);
  ::flock(lock, LOCK_EX);
  struct Unlock {
    int fd;
    ~Unlock() {
      ::flock(fd, LOCK_UN);
      ::close(fd);
    }
  } unlock{lock};

  std::string error;
  llvm::json::Array merged;
  for (const llvm::json::Value &v : readEntries(path, &error)) {
    std::string why;
    std::optional<TuningEntry> e = parseEntry(v, &why);
    if (!e)
      continue; // unreadable entries are not carried over
    // Ours replaces the file's entry for the same key on this GPU, whether
    // that one was current or stale (older templates, driver or NVRTC): a
    // re-tuned kernel leaves no stale twin behind.
    if (e->signature.sameGpu(signature_.of(e->key.stage)) && entries_.count(e->key.str()))
      continue;
    merged.push_back(entryJson(*e));
  }
  for (const auto &[k, e] : entries_)
    merged.push_back(entryJson(e));
  llvm::json::Object root{{"format", "dattn-tuning-1"}, {"entries", std::move(merged)}};
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(root)));
  os.flush();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text << "\n";
    if (!out)
      throw Error("cannot write the tuning database: cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write the tuning database: cannot rename " + tmp + " to " + path);
  }
}

} // namespace dattn
