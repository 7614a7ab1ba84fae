// The stage hashes of the embedded templates (cmake/EmbedTemplates.cmake):
// each tuned stage's tuning entries carry the hash of a set of templates,
// and that set must hold every template the stage's modules include, or a
// change to one of them would leave its entries valid though the kernels
// they measured changed. Checked on every example's modules, following the
// templates' own #include lines.
#include "EmbeddedTemplates.h"
#include "RandomSpec.h"

#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/emit.h"

#include <gtest/gtest.h>

#include <set>
#include <sstream>

namespace dattn::test {
namespace {

/// The "dattn/..." headers that `text` includes.
std::vector<std::string> includesOf(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  const std::string directive = "#include \"";
  for (std::string line; std::getline(in, line);)
    if (line.rfind(directive, 0) == 0) {
      const size_t end = line.find('"', directive.size());
      const std::string name = line.substr(directive.size(), end - directive.size());
      if (name.rfind("dattn/", 0) == 0)
        out.push_back(name);
    }
  return out;
}

const char *embedded(const std::string &name) {
  for (int i = 0; i < rt::kNumTemplates; ++i)
    if (name == rt::kTemplates[i].name)
      return rt::kTemplates[i].text;
  return nullptr;
}

/// Every template a module's source reaches through #include.
std::set<std::string> closureOf(const std::string &source) {
  std::set<std::string> seen;
  std::vector<std::string> todo = includesOf(source);
  while (!todo.empty()) {
    const std::string name = todo.back();
    todo.pop_back();
    if (!seen.insert(name).second)
      continue;
    const char *text = embedded(name);
    EXPECT_NE(text, nullptr) << name << " is included but not embedded";
    if (text)
      for (const std::string &n : includesOf(text))
        todo.push_back(n);
  }
  return seen;
}

bool startsWith(const std::string &s, const char *prefix) { return s.rfind(prefix, 0) == 0; }

TEST(EmbeddedTemplates, StageHashesCoverWhatEachStageIncludes) {
  // The rule the stage hashes are built on: the forward's set is every
  // template but dattn/backward* and dattn/ring*, the backward's every one
  // but dattn/ring*.
  int modules = 0;
  for (const std::string &f : exampleFiles())
    for (const AttentionSpec &spec : loadSpecFile(f).attentions)
      for (const char *arch : {"sm_80", "sm_90a"}) {
        PlanOptions po;
        po.arch = arch;
        const AttentionPlan plan = planAttention(spec, po);
        const std::string what = spec.name + " " + arch;
        for (const std::string &name : closureOf(emitCuda(plan, arch).source))
          EXPECT_FALSE(startsWith(name, "dattn/backward") || startsWith(name, "dattn/ring"))
              << what << ": the forward module includes " << name
              << ", which the forward's templates hash leaves out";
        for (bool deterministic : {false, true})
          for (const std::string &name :
               closureOf(emitCudaBackward(plan, arch, deterministic).source))
            EXPECT_FALSE(startsWith(name, "dattn/ring"))
                << what << ": the backward module includes " << name
                << ", which the backward's templates hash leaves out";
        modules += 3;
      }
  EXPECT_GT(modules, 0);
  // The two hashes differ (the backward's set is larger), so a change to a
  // backward header can leave the forward's entries valid.
  EXPECT_STRNE(rt::kForwardTemplatesHash, rt::kBackwardTemplatesHash);
}

TEST(EmbeddedTemplates, IncludesAreFoundInTheirLines) {
  // The scanner the test above relies on: only quoted dattn/ includes.
  const std::vector<std::string> got =
      includesOf("#include \"dattn/a.cuh\"\n#include <cuda.h>\n// #include \"dattn/b.cuh\"\n"
                 "#include \"other/c.h\"\n#include \"dattn/d.cuh\"\n");
  EXPECT_EQ(got, (std::vector<std::string>{"dattn/a.cuh", "dattn/d.cuh"}));
}

} // namespace
} // namespace dattn::test
