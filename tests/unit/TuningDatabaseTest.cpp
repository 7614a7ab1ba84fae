// The tuning database without a GPU: entries round-trip through the JSON
// file; stale entries (other templates, NVRTC, driver) and malformed ones
// are reported and ignored, a corrupt file is an empty database with a
// report, never an error; other GPUs' entries are kept but not used; two
// writers, one after the other or at once, keep each other's entries.
#include "RandomSpec.h"

#include "dattn/compiler.h"
#include "dattn/emit.h"
#include "dattn/kernels.h"
#include "dattn/error.h"
#include "dattn/tuner.h"
#include "dattn/tuning.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <thread>

namespace dattn::test {
namespace {

TuningSignature h100() {
  return {"NVIDIA H100 80GB HBM3", 132, 90, 13, "13.0", "abc123"};
}

TuningEntry entry(const std::string &family, int blockM, double ms) {
  TuningEntry e;
  e.signature = h100();
  e.key.stage = "forward";
  e.key.family = family;
  e.key.dtype = "bf16";
  e.key.headDim = 128;
  e.key.kind = "strided";
  e.key.geometry = "rows2048";
  e.key.seqBucket = 65536;
  e.config = {blockM, 64, 2, false};
  e.medianMs = ms;
  e.runnerUp = {64, 64, 2, false};
  e.runnerUpMs = ms * 1.1;
  e.heuristicMs = ms * 1.2;
  return e;
}

std::string tempPath(const char *name) {
  std::string p = ::testing::TempDir() + "/" + name;
  std::remove(p.c_str());
  return p;
}

TEST(TuningDatabase, RoundTrip) {
  const std::string path = tempPath("tuning_roundtrip.json");
  TuningDatabase db = TuningDatabase::load(path, h100(), nullptr); // missing: empty
  EXPECT_EQ(db.size(), 0u);
  TuningEntry a = entry("sm80_mma_forward", 128, 1.5), b = entry("sm80_mma_forward", 64, 2.5);
  b.key.geometry = "rows1024";
  db.put(a);
  db.put(b);
  db.save(path);
  std::vector<std::string> report;
  TuningDatabase back = TuningDatabase::load(path, h100(), &report);
  EXPECT_TRUE(report.empty()) << report[0];
  ASSERT_EQ(back.size(), 2u);
  const TuningEntry *x = back.find(a.key);
  ASSERT_NE(x, nullptr);
  EXPECT_TRUE(x->config == a.config);
  EXPECT_DOUBLE_EQ(x->medianMs, 1.5);
  EXPECT_DOUBLE_EQ(x->heuristicMs, 1.5 * 1.2);
  EXPECT_TRUE(back.find(b.key)->config == b.config);
  EXPECT_EQ(x->family, "sm80_mma_forward"); // unset: the key's
}

TEST(TuningDatabase, AnotherFamilysWinnerRoundTrips) {
  // A forward whose winner is another family's configuration keeps both
  // names; an entry written before config_family reads as the key's family.
  const std::string path = tempPath("tuning_family.json");
  TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
  TuningEntry e = entry("sm90_wgmma_pipelined_forward", 32, 1.0);
  e.family = "sm80_mma_forward";
  db.put(e);
  db.save(path);
  std::vector<std::string> report;
  TuningDatabase back = TuningDatabase::load(path, h100(), &report);
  ASSERT_NE(back.find(e.key), nullptr);
  EXPECT_EQ(back.find(e.key)->family, "sm80_mma_forward");
  EXPECT_EQ(back.find(e.key)->key.family, "sm90_wgmma_pipelined_forward");
  std::string old = tuningEntryJson(entry("sm80_mma_forward", 64, 2.0));
  const size_t at = old.find("\"config_family\"");
  ASSERT_NE(at, std::string::npos) << old;
  old.erase(at, old.find(',', at) + 1 - at);
  {
    std::ofstream out(path);
    out << "{\"format\": \"dattn-tuning-1\", \"entries\": [" << old << "]}";
  }
  report.clear();
  TuningDatabase before = TuningDatabase::load(path, h100(), &report);
  EXPECT_TRUE(report.empty()) << report[0];
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before.find(entry("sm80_mma_forward", 64, 2.0).key)->family, "sm80_mma_forward");
}

TEST(TuningDatabase, UnmeasuredTimesAreNullNotInfinity) {
  // JSON has no infinity: a runner-up that never ran is written as null
  // and read back as infinity, and the file stays valid JSON.
  const std::string path = tempPath("tuning_null.json");
  TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
  TuningEntry a = entry("sm80_mma_forward", 128, 1.5);
  a.runnerUpMs = std::numeric_limits<double>::infinity();
  db.put(a);
  db.save(path);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"runner_up_ms\": null"), std::string::npos) << text;
  EXPECT_EQ(text.find("inf"), std::string::npos) << text;
  std::vector<std::string> report;
  TuningDatabase back = TuningDatabase::load(path, h100(), &report);
  EXPECT_TRUE(report.empty()) << report[0];
  ASSERT_NE(back.find(a.key), nullptr);
  EXPECT_TRUE(std::isinf(back.find(a.key)->runnerUpMs));
  EXPECT_DOUBLE_EQ(back.find(a.key)->medianMs, 1.5);
}

TEST(TuningDatabase, EachStageIsStaleOnlyWithItsOwnTemplates) {
  // Each stage's entries carry the hash of the templates its modules
  // include: new backward templates leave the forward's entries valid.
  const std::string path = tempPath("tuning_stages.json");
  StageSignatures measured;
  measured.forward = measured.backward = h100();
  measured.forward.templates = "fwd1";
  measured.backward.templates = "bwd1";
  TuningDatabase db = TuningDatabase::load(path, measured, nullptr);
  TuningEntry f = entry("sm80_mma_forward", 128, 1.0), b = f;
  f.signature = measured.forward;
  b.signature = measured.backward;
  b.key.stage = "backward";
  b.key.family = "sm80_mma_backward_dkv";
  db.put(f);
  db.put(b);
  db.save(path);
  EXPECT_EQ(TuningDatabase::load(path, measured, nullptr).size(), 2u);

  StageSignatures newBackward = measured;
  newBackward.backward.templates = "bwd2";
  std::vector<std::string> report;
  TuningDatabase db2 = TuningDatabase::load(path, newBackward, &report);
  EXPECT_NE(db2.find(f.key), nullptr);
  EXPECT_EQ(db2.find(b.key), nullptr);
  ASSERT_EQ(report.size(), 1u);
  EXPECT_NE(report[0].find("entry 0 is stale: measured with"), std::string::npos) << report[0];
  EXPECT_NE(report[0].find("templates bwd1, now"), std::string::npos) << report[0];
  EXPECT_NE(report[0].find("templates bwd2"), std::string::npos) << report[0];
  // Re-tuning the backward adds its entry with the new hash; saving keeps
  // the forward's and replaces the stale backward one (same key): the file
  // holds two entries, none stale.
  b.signature = newBackward.backward;
  db2.put(b);
  db2.save(path);
  report.clear();
  EXPECT_EQ(TuningDatabase::load(path, newBackward, &report).size(), 2u);
  EXPECT_TRUE(report.empty()) << report.front();
  std::string error;
  const auto inFile = TuningDatabase::signaturesIn(path, &error);
  size_t entries = 0;
  for (const auto &[sig, count] : inFile)
    entries += count;
  EXPECT_EQ(entries, 2u);

  // New forward templates stale the forward's entry only (a forward
  // header is in the backward's set too, so its hash would change as well:
  // here the backward's is kept to see the forward's alone).
  StageSignatures newForward = newBackward;
  newForward.forward.templates = "fwd2";
  TuningDatabase db3 = TuningDatabase::load(path, newForward, nullptr);
  EXPECT_EQ(db3.find(f.key), nullptr);
  EXPECT_NE(db3.find(b.key), nullptr);

  // Another GPU's run writes its entry for the same key; then, after a
  // driver update, this GPU re-tunes the forward: its entry replaces the
  // one of the old driver (no stale twin), the old backward one stays
  // (not re-tuned) and so does the other GPU's.
  StageSignatures h200 = newBackward;
  h200.forward.gpu = h200.backward.gpu = "NVIDIA H200";
  TuningDatabase onH200 = TuningDatabase::load(path, h200, nullptr);
  TuningEntry fH200 = f;
  fH200.signature = h200.forward;
  onH200.put(fH200);
  onH200.save(path);
  StageSignatures newDriver = newBackward;
  newDriver.forward.driverMajor = newDriver.backward.driverMajor = 14;
  TuningDatabase db4 = TuningDatabase::load(path, newDriver, nullptr);
  f.signature = newDriver.forward;
  db4.put(f);
  db4.save(path);
  entries = 0;
  for (const auto &[sig, count] : TuningDatabase::signaturesIn(path, &error))
    entries += count;
  EXPECT_EQ(entries, 3u) << "the new driver's forward, the old driver's backward, the H200's";
  EXPECT_EQ(TuningDatabase::load(path, newDriver, nullptr).size(), 1u);
}

TEST(TuningDatabase, StaleAndMalformedEntriesAreReportedAndIgnored) {
  const std::string path = tempPath("tuning_stale.json");
  TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
  db.put(entry("sm80_mma_forward", 128, 1.0));
  db.save(path);
  // New templates: the entry is stale.
  TuningSignature now = h100();
  now.templates = "def456";
  std::vector<std::string> report;
  TuningDatabase stale = TuningDatabase::load(path, now, &report);
  EXPECT_EQ(stale.size(), 0u);
  ASSERT_EQ(report.size(), 1u);
  EXPECT_NE(report[0].find("is stale"), std::string::npos) << report[0];
  EXPECT_NE(report[0].find("NVRTC 13.0"), std::string::npos) << report[0];
  // Several stale entries of one run: one line that counts them.
  TuningEntry second = entry("sm80_mma_forward", 64, 1.0);
  second.key.geometry = "rows4096";
  db.put(second);
  db.save(path);
  report.clear();
  EXPECT_EQ(TuningDatabase::load(path, now, &report).size(), 0u);
  ASSERT_EQ(report.size(), 1u);
  EXPECT_NE(report[0].find("2 entries (from 0) are stale"), std::string::npos) << report[0];
  EXPECT_EQ(TuningDatabase::load(path, h100(), nullptr).size(), 2u);
  // Another NVRTC, another driver: stale too.
  for (auto change : {+[](TuningSignature &s) { s.nvrtc = "13.1"; },
                      +[](TuningSignature &s) { s.driverMajor = 14; }}) {
    TuningSignature s = h100();
    change(s);
    report.clear();
    EXPECT_EQ(TuningDatabase::load(path, s, &report).size(), 0u);
    EXPECT_EQ(report.size(), 1u);
  }
  // A malformed entry next to a good one: the good one is still used.
  {
    std::ofstream out(path);
    out << "{\"format\": \"dattn-tuning-1\", \"entries\": [{\"signature\": {}, \"key\": {}}, "
        << tuningEntryJson(entry("sm80_mma_forward", 32, 3.0)) << "]}";
  }
  report.clear();
  TuningDatabase mixed = TuningDatabase::load(path, h100(), &report);
  EXPECT_EQ(mixed.size(), 1u);
  ASSERT_EQ(report.size(), 1u);
  EXPECT_NE(report[0].find("entry 0 ignored: field 'gpu'"), std::string::npos) << report[0];
}

TEST(TuningLookup, UserFirstThenShippedThenHeuristic) {
  const std::string user = tempPath("tuning_user.json");
  const std::string folder = ::testing::TempDir() + "/tuning_shipped";
  std::system(("rm -rf '" + folder + "' && mkdir -p '" + folder + "'").c_str());
  const std::string shippedA = folder + "/a.json", shippedB = folder + "/b.json";
  auto write = [](const std::string &path, const std::vector<TuningEntry> &entries) {
    TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
    for (const TuningEntry &e : entries)
      db.put(e);
    db.save(path);
  };
  TuningEntry other = entry("sm80_mma_forward", 64, 2.0);
  other.key.geometry = "rows4096";
  write(shippedA, {entry("sm80_mma_forward", 64, 2.0), other});
  write(shippedB, {entry("sm80_mma_forward", 32, 2.5)});
  write(user, {entry("sm80_mma_forward", 128, 1.0)});
  const std::vector<KernelConfig> candidates = {
      {32, 64, 2, false}, {64, 64, 2, false}, {128, 64, 2, false}};
  ASSERT_EQ(TuningLookup::shippedIn(folder), (std::vector<std::string>{shippedA, shippedB}));
  EXPECT_TRUE(TuningLookup::shippedIn(folder + "/none").empty());

  TuningLookup lookup(h100(), user, TuningLookup::shippedIn(folder));
  const TuningKey key = entry("sm80_mma_forward", 0, 0).key;
  std::optional<TunedConfig> got = lookup.lookup(key, candidates);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->config.blockM, 128); // the user's database first
  EXPECT_EQ(got->origin, "user database " + user);
  // Only the shipped database has the other geometry.
  got = lookup.lookup(other.key, candidates);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->config.blockM, 64);
  EXPECT_EQ(got->origin, "shipped database " + shippedA);
  // A configuration the family no longer offers: reported, and the next
  // database answers; with none left, the heuristic (nullopt).
  got = lookup.lookup(key, {{64, 64, 2, false}, {32, 64, 2, false}});
  ASSERT_TRUE(got);
  EXPECT_EQ(got->config.blockM, 64);
  ASSERT_EQ(lookup.report().size(), 1u);
  EXPECT_NE(lookup.report()[0].find("no longer offers"), std::string::npos)
      << lookup.report()[0];
  EXPECT_FALSE(lookup.lookup(key, {{16, 16, 1, false}}));
  TuningKey unknown = key;
  unknown.seqBucket = 1 << 20;
  EXPECT_FALSE(lookup.lookup(unknown, candidates));
  // Another GPU's signature: nothing applies.
  TuningSignature h200 = h100();
  h200.gpu = "NVIDIA H200";
  EXPECT_FALSE(TuningLookup(h200, user, TuningLookup::shippedIn(folder)).lookup(key, candidates));
}

/// A string field of the first `"name": "..."` (or number) in `text`.
std::string firstField(const std::string &text, const std::string &name) {
  std::smatch m;
  const std::regex re("\"" + name + "\": *\"?([^\",}]*)");
  return std::regex_search(text, m, re) ? m[1].str() : "";
}

TEST(TuningDatabase, ShippedDatabasesLoadWhole) {
  // Every database in autotune/db is one GPU run: read with its own
  // signature (one templates hash per stage), no entry is malformed or
  // skipped, and every family it names exists in this version (a renamed
  // family would silently drop entries).
  const std::vector<std::string> files = TuningLookup::shippedIn(DATTN_SHIPPED_DB_DIR);
  for (const std::string &path : files) {
    SCOPED_TRACE(path);
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    TuningSignature sig;
    sig.gpu = firstField(text, "gpu");
    sig.multiprocessors = std::atoi(firstField(text, "multiprocessors").c_str());
    sig.sm = std::atoi(firstField(text, "sm").c_str());
    sig.driverMajor = std::atoi(firstField(text, "driver_major").c_str());
    sig.nvrtc = firstField(text, "nvrtc");
    ASSERT_FALSE(sig.gpu.empty());
    // Each entry's key (its stage) comes before its signature (the
    // templates hash): the writer sorts an entry's fields.
    std::map<std::string, std::set<std::string>> hashes; // stage -> templates hashes
    const std::regex stageThenHash(
        "\"stage\": *\"([a-z_]+)\"[^]*?\"templates\": *\"([0-9a-z-]+)\"");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), stageThenHash);
         it != std::sregex_iterator(); ++it)
      hashes[(*it)[1].str() == "forward" ? "forward" : "backward"].insert((*it)[2].str());
    StageSignatures sigs(sig);
    for (const auto &[stage, hs] : hashes) {
      EXPECT_EQ(hs.size(), 1u) << stage << " entries of several template versions";
      (stage == "forward" ? sigs.forward : sigs.backward).templates = *hs.begin();
    }
    std::vector<std::string> report;
    const TuningDatabase db = TuningDatabase::load(path, sigs, &report);
    EXPECT_TRUE(report.empty()) << report.front();
    size_t entries = 0;
    for (size_t at = text.find("\"signature\""); at != std::string::npos;
         at = text.find("\"signature\"", at + 1))
      ++entries;
    EXPECT_GT(entries, 0u);
    EXPECT_EQ(db.size(), entries);
    const std::regex family("\"(config_family|family)\": *\"([a-z0-9_]+)\"");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), family);
         it != std::sregex_iterator(); ++it)
      EXPECT_NO_THROW(familyNamed((*it)[2].str())) << (*it)[2].str();
  }
}

TEST(TuningDatabase, SignaturesInSummarizeAFileWithoutAGpu) {
  // What `dattn info` prints: each signature with its entries' count, in
  // file order; malformed entries are not counted; a missing file is empty,
  // a corrupt one an error.
  const std::string path = tempPath("tuning_signatures.json");
  TuningEntry other = entry("sm80_mma_forward", 64, 2.0);
  other.signature.gpu = "NVIDIA H200";
  TuningEntry second = entry("sm80_mma_forward", 32, 2.0);
  second.key.geometry = "rows4096";
  {
    std::ofstream out(path);
    out << "{\"format\": \"dattn-tuning-1\", \"entries\": ["
        << tuningEntryJson(entry("sm80_mma_forward", 128, 1.0)) << ", " << tuningEntryJson(other)
        << ", {\"signature\": {}}, " << tuningEntryJson(second) << "]}";
  }
  std::string error;
  const auto sigs = TuningDatabase::signaturesIn(path, &error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(sigs.size(), 2u);
  EXPECT_TRUE(sigs[0].first == h100());
  EXPECT_EQ(sigs[0].second, 2u);
  EXPECT_EQ(sigs[1].first.gpu, "NVIDIA H200");
  EXPECT_EQ(sigs[1].second, 1u);
  EXPECT_TRUE(TuningDatabase::signaturesIn(path + ".missing", &error).empty());
  EXPECT_EQ(error, "");
  {
    std::ofstream out(path);
    out << "{\"entries\": ";
  }
  EXPECT_TRUE(TuningDatabase::signaturesIn(path, &error).empty());
  EXPECT_NE(error.find("is not valid JSON"), std::string::npos) << error;
}

TEST(TuningDatabase, CorruptFileIsAnEmptyDatabaseWithAReport) {
  const std::string path = tempPath("tuning_corrupt.json");
  for (const char *text : {"{\"entries\": [", "[1, 2, 3]", "\x01\x02garbage"}) {
    {
      std::ofstream out(path);
      out << text;
    }
    std::vector<std::string> report;
    TuningDatabase db = TuningDatabase::load(path, h100(), &report);
    EXPECT_EQ(db.size(), 0u);
    ASSERT_EQ(report.size(), 1u) << text;
    EXPECT_NE(report[0].find(path), std::string::npos) << report[0];
    // Saving over it replaces the corrupt file with a valid one.
    db.put(entry("sm80_mma_forward", 128, 1.0));
    db.save(path);
    report.clear();
    EXPECT_EQ(TuningDatabase::load(path, h100(), &report).size(), 1u);
    EXPECT_TRUE(report.empty());
  }
}

TEST(TuningDatabase, WritersMergeAndOtherGpusSurvive) {
  const std::string path = tempPath("tuning_merge.json");
  TuningSignature h200 = h100();
  h200.gpu = "NVIDIA H200";
  TuningDatabase other = TuningDatabase::load(path, h200, nullptr);
  TuningEntry o = entry("sm80_mma_forward", 128, 1.0);
  o.signature = h200;
  other.put(o);
  other.save(path);
  // Many writers at once, each with its own key.
  std::vector<std::thread> writers;
  for (int w = 0; w < 8; ++w)
    writers.emplace_back([&, w] {
      TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
      TuningEntry e = entry("sm80_mma_forward", 64, 1.0 + w);
      e.key.seqBucket = int64_t(1024) << w;
      db.put(e);
      db.save(path);
    });
  for (auto &t : writers)
    t.join();
  EXPECT_EQ(TuningDatabase::load(path, h100(), nullptr).size(), 8u);
  // The H200's entry is still in the file, used on an H200 only.
  TuningDatabase onH200 = TuningDatabase::load(path, h200, nullptr);
  ASSERT_EQ(onH200.size(), 1u);
  EXPECT_NE(onH200.find(o.key), nullptr);
}

TEST(TuningDatabase, KeysBucketTheGeometry) {
  ParseResult r = parseSpec("attention t { heads = 2 head_dim = 64 "
                            "branch heads 0 { dilated(segment = 3000, dilation = 3) } "
                            "branch heads 1 { random(block = 64, density = 0.2, seed = 1) "
                            "| window(left = 100, right = 0) } }",
                            "t.dattn");
  ASSERT_TRUE(r.ok());
  const AttentionPlan p = planAttention(r.file.attentions[0]);
  const TuningKey a = tuningKey(p, p.branches[0], "forward", "sm80_mma_forward", 50000);
  EXPECT_EQ(a.kind, "strided");
  EXPECT_EQ(a.geometry, "rows1024"); // 1000 compact rows
  EXPECT_EQ(a.seqBucket, 65536);
  const TuningKey b = tuningKey(p, p.branches[1], "backward", "sm80_mma_backward_dkv", 4096);
  EXPECT_EQ(b.kind, "blocks");
  EXPECT_EQ(b.geometry, "block64");
  EXPECT_EQ(b.str(), "backward/sm80_mma_backward_dkv/bf16/d64/blocks/block64/n4096");
}

/// One dilated branch: on sm_90 a forward and a dK/dV kernel of the sm80
/// families; on sm_90a the forward is the pipelined wgmma kernel.
AttentionSpec dilatedSpec() {
  ParseResult r = parseSpec("attention a { heads = 4 head_dim = 128 dtype = bf16 "
                            "branch { dilated(segment = 4096, dilation = 2, offset = head) } }",
                            "a.dattn");
  if (!r.ok())
    throw Error("the tuning tests' spec does not parse");
  return r.file.attentions[0];
}

AttentionPlan dilatedPlanFor(const char *arch) {
  PlanOptions po;
  po.arch = arch;
  return planAttention(dilatedSpec(), po);
}

/// The sm_90 plan of spec text with one attention.
AttentionPlan sm90Plan(const std::string &text) {
  ParseResult r = parseSpec(text, "a.dattn");
  if (!r.ok())
    throw Error("a tuning test's spec does not parse: " + r.formatDiagnostics());
  PlanOptions po;
  po.arch = "sm_90";
  return planAttention(r.file.attentions[0], po);
}

// The plan a run compiles: the databases' measurement for this N replaces
// the heuristic where the family still offers it; other N buckets, other
// GPUs and configurations no longer offered leave the heuristic, and the
// plan says where each configuration came from.
TEST(TuningLookup, TunedKernelsReachThePlan) {
  const AttentionSpec spec = dilatedSpec();
  PlanOptions po;
  po.arch = "sm_90";
  const AttentionPlan heuristic = planAttention(spec, po);
  const Target target = Target::parse("sm_90");
  const BranchPlan &b = heuristic.branches[0];
  const std::string path = tempPath("tuning_plan.json");
  TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
  TuningEntry fwd;
  fwd.signature = h100();
  fwd.key = tuningKey(heuristic, b, "forward", "sm80_mma_forward", 65536);
  fwd.config = {64, 32, 1, false}; // a candidate, not the heuristic's m128 n64 t2
  fwd.medianMs = 1.0;
  db.put(fwd);
  TuningEntry gone = fwd; // the backward's dK/dV with a configuration not offered
  gone.key = tuningKey(heuristic, b, "backward", "sm80_mma_backward_dkv", 65536);
  gone.config = {64, 256, 0, true};
  db.put(gone);
  db.save(path);

  TuningLookup lookup(h100(), path, {});
  const std::vector<TunedKernel> tuned = tunedKernels(heuristic, target, lookup, 50000);
  ASSERT_EQ(tuned.size(), 1u); // N = 50000 is in the 65536 bucket
  EXPECT_EQ(tuned[0].stage, "forward");
  EXPECT_EQ(lookup.report().size(), 1u) << "the dK/dV entry's configuration is reported";
  po.tuned = tuned;
  const AttentionPlan plan = planAttention(spec, po);
  const KernelChoice f = plannedKernels(plan, plan.branches[0], "forward").at(0);
  EXPECT_TRUE(f.config == fwd.config) << f.config.describe();
  EXPECT_EQ(f.origin, "user database " + path);
  const KernelChoice d = plannedKernels(plan, plan.branches[0], "backward").at(0);
  EXPECT_EQ(d.origin, "heuristic");
  EXPECT_TRUE(d.config == plannedKernels(heuristic, b, "backward").at(0).config);
  // Another bucket or another GPU: nothing tuned.
  EXPECT_TRUE(tunedKernels(heuristic, target, lookup, 200000).empty());
  TuningSignature h200 = h100();
  h200.gpu = "NVIDIA H200";
  EXPECT_TRUE(tunedKernels(heuristic, target, TuningLookup(h200, path, {}), 50000).empty());
  // The emitted module names the measured configuration.
  const EmittedModule m = emitCuda(plan, "sm_90");
  EXPECT_NE(m.source.find("64, 32, 1"), std::string::npos);
  EXPECT_EQ(m.kernels.at(1).origin, "user database " + path);
}

// The tuner with a model of the GPU: a candidate's time is its distance
// from a best configuration; one candidate fails to launch, one computes
// wrong outputs. The tuner must pick the fastest that ran right, record
// the runner-up and the heuristic's time, tune the backward with the
// forward's best in place, and stop when the budget is spent.
class ModelGpu : public TuneMeasure {
public:
  std::vector<std::vector<TunedKernel>> calls, prepared;
  void prepare(const std::vector<std::vector<TunedKernel>> &batch, bool) override {
    prepared.insert(prepared.end(), batch.begin(), batch.end());
  }
  Measurement measure(const std::vector<TunedKernel> &kernels, bool backward) override {
    calls.push_back(kernels);
    Measurement m;
    m.outputs = {1.f, 2.f, 3.f};
    m.ms = backward ? 10 : 1;
    for (const TunedKernel &k : kernels) {
      const KernelConfig &c = k.config;
      if (k.stage == "forward") {
        if (c.blockM == 16 && c.blockN == 16)
          m.error = "launch failed";
        if (c.blockM == 32 && c.blockN == 64 && c.rowTilesPerWarp == 2)
          m.outputs[1] = 2.5f; // wrong
        m.ms += std::abs(c.blockM - 32) / 16.0 + std::abs(c.blockN - 64) / 16.0 +
                (c.rowTilesPerWarp == 2 ? 0 : 0.5);
      } else {
        m.ms += std::abs(c.blockN - 64) / 16.0 + std::abs(c.blockM - 32) / 32.0;
      }
    }
    return m;
  }
};

TEST(Tuner, PicksTheFastestCorrectCandidate) {
  const AttentionPlan plan = dilatedPlanFor("sm_90");
  const Target target = Target::parse("sm_90");
  ModelGpu gpu;
  TuneOptions opt;
  opt.backward = true;
  int lastDone = 0, lastTotal = 0;
  opt.progress = [&](int done, int total, double) {
    lastDone = done;
    lastTotal = total;
  };
  const TuneReport rep = tune(plan, target, 65536, h100(), gpu, opt);
  EXPECT_TRUE(rep.finished);
  ASSERT_EQ(rep.kernels.size(), 2u); // forward, backward dK/dV
  const TunedResult &f = rep.kernels[0];
  EXPECT_EQ(f.entry.key.stage, "forward");
  EXPECT_EQ(f.tried, 21);
  // m32 n64 t2 is fastest but wrong: m32 n64 t1 wins, 0.5 ms slower.
  EXPECT_TRUE(f.entry.config == (KernelConfig{32, 64, 1, false})) << f.entry.config.describe();
  EXPECT_DOUBLE_EQ(f.entry.medianMs, 1.5);
  EXPECT_EQ(f.rejected.size(), 2u); // the failed launch and the wrong outputs
  EXPECT_DOUBLE_EQ(f.entry.heuristicMs, 1 + 96 / 16.0 + 0); // m128 n64 t2
  EXPECT_LT(f.entry.medianMs, f.entry.runnerUpMs);
  const TunedResult &b = rep.kernels[1];
  EXPECT_EQ(b.entry.key.stage, "backward");
  EXPECT_TRUE(b.entry.config == (KernelConfig{32, 64, 0, true})) << b.entry.config.describe();
  // The backward's measurements ran with the forward's best in place.
  const std::vector<TunedKernel> &lastCall = gpu.calls.back();
  ASSERT_EQ(lastCall.size(), 2u);
  EXPECT_TRUE(lastCall[0].config == f.entry.config);
  EXPECT_EQ(lastDone, lastTotal);
  EXPECT_EQ(lastTotal, 21 + 12);
  // Every measured candidate was handed to prepare() first (in batches,
  // for compiling in parallel), in the order measured.
  ASSERT_EQ(gpu.prepared.size(), gpu.calls.size() - 2); // not the references
  for (size_t x = 0; x < gpu.prepared.size(); ++x) {
    ASSERT_EQ(gpu.prepared[x].size(), gpu.calls[x + 2].size());
    EXPECT_TRUE(gpu.prepared[x].back().config == gpu.calls[x + 2].back().config);
  }

  // No budget: nothing is tried past the references, and the report says so.
  ModelGpu again;
  opt.budgetSeconds = 0;
  const TuneReport none = tune(plan, target, 65536, h100(), again, opt);
  EXPECT_FALSE(none.finished);
  EXPECT_EQ(again.calls.size(), 2u); // the heuristic's forward and backward
}

/// Every configuration but the heuristic's is slower.
class HeuristicFastest : public TuneMeasure {
public:
  KernelConfig heuristic;
  std::vector<std::vector<TunedKernel>> calls;
  Measurement measure(const std::vector<TunedKernel> &kernels, bool) override {
    calls.push_back(kernels);
    Measurement m;
    m.outputs = {1.f};
    m.ms = 1;
    for (const TunedKernel &k : kernels)
      m.ms += k.config == heuristic ? 0 : 1;
    return m;
  }
};

TEST(Tuner, TimesTheHeuristicFirstAndKeepsItWhenNothingBeatsIt) {
  const AttentionPlan plan = dilatedPlanFor("sm_90");
  HeuristicFastest gpu;
  gpu.heuristic = plan.branches[0].kernels[0].config; // the forward's
  ASSERT_EQ(plan.branches[0].kernels[0].stage, "forward");
  TuneOptions opt;
  const TuneReport rep = tune(plan, Target::parse("sm_90"), 65536, h100(), gpu, opt);
  ASSERT_EQ(rep.kernels.size(), 1u);
  ASSERT_GE(gpu.calls.size(), 3u);
  // After the reference, the first configuration timed is the heuristic's
  // (so a budget that runs out early still leaves the time to beat).
  ASSERT_EQ(gpu.calls[1].size(), 1u);
  EXPECT_TRUE(gpu.calls[1][0].config == gpu.heuristic);
  const TuningEntry &e = rep.kernels[0].entry;
  EXPECT_TRUE(e.config == gpu.heuristic) << e.config.describe();
  EXPECT_DOUBLE_EQ(e.medianMs, 1);
  EXPECT_DOUBLE_EQ(e.heuristicMs, 1);
  EXPECT_DOUBLE_EQ(e.runnerUpMs, 2);
}

/// One configuration other than the heuristic's is slightly faster.
class SlightlyFaster : public TuneMeasure {
public:
  KernelConfig heuristic, faster;
  double gain = 0;
  Measurement measure(const std::vector<TunedKernel> &kernels, bool) override {
    Measurement m;
    m.outputs = {1.f};
    m.ms = 1;
    for (const TunedKernel &k : kernels)
      m.ms += k.config == heuristic ? 0 : k.config == faster ? -gain : 1;
    return m;
  }
};

TEST(Tuner, KeepsTheHeuristicAgainstGainsUnderTheNoiseMargin) {
  // 0.5% faster is under the default 1% margin: the heuristic stays, with
  // its own time; 3% faster replaces it; so does 0.5% with a margin of 0.1%.
  const AttentionPlan plan = dilatedPlanFor("sm_90");
  const Target target = Target::parse("sm_90");
  SlightlyFaster gpu;
  gpu.heuristic = plan.branches[0].kernels[0].config;
  gpu.faster = gpu.heuristic == KernelConfig{32, 64, 1, false} ? KernelConfig{64, 64, 1, false}
                                                               : KernelConfig{32, 64, 1, false};
  TuneOptions opt;
  for (double gain : {0.005, 0.03}) {
    gpu.gain = gain;
    const TuneReport rep = tune(plan, target, 65536, h100(), gpu, opt);
    ASSERT_EQ(rep.kernels.size(), 1u);
    const TuningEntry &e = rep.kernels[0].entry;
    EXPECT_TRUE(e.config == (gain < opt.minGain ? gpu.heuristic : gpu.faster))
        << "gain " << gain << ": " << e.config.describe();
    EXPECT_DOUBLE_EQ(e.medianMs, gain < opt.minGain ? 1 : 1 - gain);
    EXPECT_DOUBLE_EQ(e.heuristicMs, 1);
  }
  gpu.gain = 0.005;
  opt.minGain = 0.001;
  const TuneReport rep = tune(plan, target, 65536, h100(), gpu, opt);
  ASSERT_EQ(rep.kernels.size(), 1u);
  EXPECT_TRUE(rep.kernels[0].entry.config == gpu.faster);
}

TEST(TuningLookup, AnotherFamilysForwardReachesThePlan) {
  // On sm_90a the heuristic's forward is the TMA wgmma kernel; an
  // entry under its key whose winner is an sm80 tile plans that tile. An
  // entry naming a family this version lacks, or one that does not run the
  // branch, is reported and ignored.
  const AttentionSpec spec = dilatedSpec();
  PlanOptions po;
  po.arch = "sm_90a";
  const AttentionPlan heuristic = planAttention(spec, po);
  const BranchPlan &b = heuristic.branches[0];
  ASSERT_STREQ(plannedKernels(heuristic, b, "forward").at(0).family->name(),
               "sm90_wgmma_tma_forward");
  const std::string path = tempPath("tuning_across.json");
  TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
  TuningEntry fwd;
  fwd.signature = h100();
  fwd.key = tuningKey(heuristic, b, "forward", "sm90_wgmma_tma_forward", 65536);
  fwd.family = "sm80_mma_forward";
  fwd.config = {64, 32, 1, false};
  fwd.medianMs = 1.0;
  db.put(fwd);
  db.save(path);
  TuningLookup lookup(h100(), path, {});
  const std::vector<TunedKernel> tuned =
      tunedKernels(heuristic, Target::parse("sm_90a"), lookup, 65536);
  ASSERT_EQ(tuned.size(), 1u);
  EXPECT_EQ(tuned[0].family, "sm80_mma_forward");
  po.tuned = tuned;
  const AttentionPlan plan = planAttention(spec, po);
  const KernelChoice f = plannedKernels(plan, plan.branches[0], "forward").at(0);
  EXPECT_STREQ(f.family->name(), "sm80_mma_forward");
  EXPECT_TRUE(f.config == fwd.config) << f.config.describe();
  EXPECT_EQ(f.origin, "user database " + path);

  for (const char *family : {"sm70_imaginary_forward", "sm80_mma_backward_dkv"}) {
    SCOPED_TRACE(family);
    fwd.family = family;
    TuningDatabase bad = TuningDatabase::load(path, h100(), nullptr);
    bad.put(fwd);
    bad.save(path);
    TuningLookup badLookup(h100(), path, {});
    EXPECT_TRUE(tunedKernels(heuristic, Target::parse("sm_90a"), badLookup, 65536).empty());
    ASSERT_EQ(badLookup.report().size(), 1u);
    EXPECT_NE(badLookup.report()[0].find("ignored"), std::string::npos)
        << badLookup.report()[0];
  }
}

TEST(Tuner, ComparesTheForwardAcrossFamilies) {
  // On sm_90a the forward's candidates are the three wgmma kernels and the sm80
  // tiles; ModelGpu makes m32 n64 t1 of sm80 the fastest correct one. The
  // entry stays under the heuristic's (TMA wgmma) key and names the
  // sm80 family as the one that runs it.
  const AttentionPlan plan = dilatedPlanFor("sm_90a");
  ModelGpu gpu;
  TuneOptions opt;
  const TuneReport rep = tune(plan, Target::parse("sm_90a"), 65536, h100(), gpu, opt);
  ASSERT_EQ(rep.kernels.size(), 1u);
  const TunedResult &f = rep.kernels[0];
  EXPECT_EQ(f.tried, 1 + 1 + 1 + 21); // TMA, the pipelined one, the first wgmma kernel, sm80's 21
  EXPECT_EQ(f.entry.key.family, "sm90_wgmma_tma_forward");
  EXPECT_EQ(f.entry.family, "sm80_mma_forward");
  EXPECT_TRUE(f.entry.config == (KernelConfig{32, 64, 1, false})) << f.entry.config.describe();
  EXPECT_DOUBLE_EQ(f.entry.heuristicMs, 1 + 96 / 16.0 + 64 / 16.0 + 0.5); // m128 n128 t1
  // The heuristic (the planned family) was timed first, after the reference.
  ASSERT_GE(gpu.calls.size(), 2u);
  ASSERT_EQ(gpu.calls[1].size(), 1u);
  EXPECT_EQ(gpu.calls[1][0].family, "sm90_wgmma_tma_forward");
}

/// Backward time by dK/dV family: the sm80 kernel fastest, the plain wgmma
/// kernel slowest.
class DkvFamiliesGpu : public TuneMeasure {
public:
  Measurement measure(const std::vector<TunedKernel> &kernels, bool backward) override {
    Measurement m;
    m.outputs = {1.f, 2.f};
    m.ms = 1;
    for (const TunedKernel &k : kernels)
      if (backward && k.stage == "backward")
        m.ms += k.family == "sm80_mma_backward_dkv"     ? 8
                : k.family == "sm90_wgmma_backward_dkv" ? 12
                                                        : 10;
    return m;
  }
};

TEST(Tuner, ComparesTheDkvKernelAcrossFamilies) {
  // On sm_90a the dK/dV kernel that adds dQ itself (the "backward" stage)
  // is the warp-specialized wgmma kernel; its candidates also hold the
  // plain wgmma kernel's and the sm80 kernel's heuristic configurations
  // (one each: the question is the family). DkvFamiliesGpu makes sm80's
  // the fastest: the entry stays under the planned family's key and
  // names the sm80 family, and a run's plan takes it for the backward stage
  // only (the deterministic stage's dK/dV and dQ kernels keep the
  // heuristic).
  const AttentionPlan plan = dilatedPlanFor("sm_90a");
  const Target target = Target::parse("sm_90a");
  ASSERT_STREQ(plannedKernels(plan, plan.branches[0], "backward").at(0).family->name(),
               "sm90_wgmma_ws_backward_dkv");
  const KernelConfig sm80 = familyNamed("sm80_mma_backward_dkv")
                                .heuristic(plan, plan.branches[0], target, false);
  DkvFamiliesGpu gpu;
  TuneOptions opt;
  opt.backward = true;
  const TuneReport rep = tune(plan, target, 65536, h100(), gpu, opt);
  ASSERT_EQ(rep.kernels.size(), 2u);
  const TunedResult &b = rep.kernels[1];
  EXPECT_EQ(b.entry.key.stage, "backward");
  EXPECT_EQ(b.tried, 3); // the warp-specialized and plain wgmma kernels, sm80's heuristic
  EXPECT_EQ(b.entry.key.family, "sm90_wgmma_ws_backward_dkv");
  EXPECT_EQ(b.entry.family, "sm80_mma_backward_dkv");
  EXPECT_TRUE(b.entry.config == sm80) << b.entry.config.describe();

  const std::string path = tempPath("tuning_dkv_across.json");
  std::remove(path.c_str());
  TuningDatabase db = TuningDatabase::load(path, h100(), nullptr);
  db.put(b.entry);
  db.save(path);
  TuningLookup lookup(h100(), path, {});
  PlanOptions po;
  po.arch = "sm_90a";
  po.tuned = tunedKernels(plan, target, lookup, 65536);
  ASSERT_EQ(po.tuned.size(), 1u);
  const AttentionPlan tuned = planAttention(dilatedSpec(), po);
  const std::vector<KernelChoice> backward = plannedKernels(tuned, tuned.branches[0], "backward");
  ASSERT_EQ(backward.size(), 1u); // dQ by reductions: no dQ kernel
  EXPECT_STREQ(backward[0].family->name(), "sm80_mma_backward_dkv");
  EXPECT_TRUE(backward[0].config == b.entry.config) << backward[0].config.describe();
  EXPECT_STREQ(
      plannedKernels(tuned, tuned.branches[0], "backward_deterministic").at(0).family->name(),
      "sm90_wgmma_ws_backward_dkv");
}

TEST(Tuner, BranchesWithOneKeyAreTunedOnce) {
  // LongNet's branches of equal rows per segment share a database key: the
  // first is tuned, the second runs its winner without being measured.
  const AttentionPlan plan =
      sm90Plan("attention a { heads = 4 head_dim = 128 dtype = bf16 "
               "branch heads 0..1 { dilated(segment = 2048, dilation = 1, offset = 0) } "
               "branch heads 2..3 { dilated(segment = 4096, dilation = 2, offset = 1) } }");
  ASSERT_EQ(plan.branches.size(), 2u);
  ASSERT_EQ(tuningKey(plan, plan.branches[0], "forward", "sm80_mma_forward", 65536).str(),
            tuningKey(plan, plan.branches[1], "forward", "sm80_mma_forward", 65536).str());
  ModelGpu gpu;
  const TuneReport rep = tune(plan, Target::parse("sm_90"), 65536, h100(), gpu, TuneOptions());
  ASSERT_EQ(rep.kernels.size(), 1u);
  EXPECT_EQ(rep.kernels[0].tried, 21);
  EXPECT_EQ(gpu.calls.size(), 1u + 21); // the reference, then branch 0's candidates
}

TEST(Tuner, TunedKeysAreTheKeysTuneWrites) {
  // `dattn tune --resume` skips an attention and length when every key of
  // tunedKeys() has an entry: they must be exactly the entries tune() makes
  // (forward, and with backward the default mode's dK/dV kernel; shared
  // keys once), or a resumed run would skip too much or never skip.
  const AttentionPlan plan =
      sm90Plan("attention a { heads = 6 head_dim = 64 dtype = bf16 "
               "branch heads 0..1 { dilated(segment = 2048, dilation = 1, offset = 0) } "
               "branch heads 2..3 { dilated(segment = 4096, dilation = 2, offset = 1) } "
               "branch heads 4..5 { window(left = 128, right = 0) | global(tokens = 16) } }");
  for (bool backward : {false, true}) {
    ModelGpu gpu;
    TuneOptions options;
    options.backward = backward;
    const TuneReport rep = tune(plan, Target::parse("sm_90"), 65536, h100(), gpu, options);
    std::vector<std::string> written, listed;
    for (const TunedResult &k : rep.kernels)
      written.push_back(k.entry.key.str());
    for (const TuningKey &k : tunedKeys(plan, 65536, backward))
      listed.push_back(k.str());
    std::sort(written.begin(), written.end());
    std::sort(listed.begin(), listed.end());
    EXPECT_EQ(written, listed) << (backward ? "with the backward" : "forward only");
    EXPECT_EQ(listed.size(), backward ? 4u : 2u); // the two dilated branches share keys
  }
}

TEST(Tuner, KnownKernelsAreNotMeasuredAgain) {
  // `dattn tune --resume` hands tune() the database's entries: kernels
  // with one are not measured (after a backward-only template change, the
  // forward's entries are valid and only the dK/dV kernels are tuned), and
  // their configuration runs while the others are.
  const AttentionPlan plan =
      sm90Plan("attention a { heads = 4 head_dim = 64 dtype = bf16 "
               "branch heads 0..1 { dilated(segment = 2048, dilation = 1, offset = 0) } "
               "branch heads 2..3 { window(left = 128, right = 0) | global(tokens = 16) } }");
  const Target target = Target::parse("sm_90");
  StageSignatures sigs;
  sigs.forward = sigs.backward = h100();
  sigs.backward.templates = "backward-hash";
  ModelGpu first;
  TuneOptions options;
  options.backward = true;
  const TuneReport all = tune(plan, target, 65536, sigs, first, options);
  TuningDatabase db;
  for (const TunedResult &k : all.kernels) {
    EXPECT_EQ(k.entry.signature.templates,
              k.entry.key.stage == "forward" ? "abc123" : "backward-hash")
        << k.entry.key.str();
    if (k.entry.key.stage == "forward") // the backward's entries went stale
      db.put(k.entry);
  }
  ASSERT_EQ(db.size(), 2u);

  ModelGpu resumed;
  options.known = [&](const TuningKey &key) { return db.find(key); };
  const TuneReport rest = tune(plan, target, 65536, sigs, resumed, options);
  ASSERT_EQ(rest.kernels.size(), 2u);
  for (const TunedResult &k : rest.kernels)
    EXPECT_EQ(k.entry.key.stage, "backward") << k.entry.key.str();
  EXPECT_LT(resumed.calls.size(), first.calls.size());
  // Every measured plan runs the known forward winners of the branches
  // reached so far (jobs go branch by branch).
  for (const std::vector<TunedKernel> &call : resumed.calls) {
    if (call.empty())
      continue; // the heuristic's reference runs
    int forwards = 0;
    for (const TunedKernel &k : call)
      if (k.stage == "forward") {
        ++forwards;
        const TuningEntry *e = nullptr;
        for (const TunedResult &r : all.kernels)
          if (r.entry.key.stage == "forward" && r.entry.key.family == k.family &&
              r.entry.config == k.config)
            e = &r.entry;
        EXPECT_NE(e, nullptr) << k.family << " " << k.config.describe();
      }
    EXPECT_GE(forwards, 1);
  }
}

} // namespace
} // namespace dattn::test
