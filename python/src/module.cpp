// _dattn: the C++ core of the dattn Python package. Specs (parse, load,
// canonical text), the ring plan, what the machine offers, and (runtime.cpp)
// compiled attentions run on raw device pointers, which the torch ops in
// python/dattn/ops.py call.
#include "dattn/compiler.h"
#include "dattn/dsl.h"
#include "dattn/error.h"
#include "dattn/ring.h"
#include "dattn/runtime.h"

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

std::vector<dattn::AttentionSpec> parse(const std::string &text, const std::string &filename) {
  dattn::ParseResult r = dattn::parseSpec(text, filename);
  if (!r.ok())
    throw dattn::SpecError(r.formatDiagnostics());
  return r.file.attentions;
}

/// Spec.parse and Spec.load return one attention: the one named `name`, or
/// the file's only one; otherwise an error that lists the names.
dattn::AttentionSpec pick(const std::vector<dattn::AttentionSpec> &specs, const nb::object &name,
                          const std::string &where) {
  std::string names;
  for (const auto &s : specs)
    names += (names.empty() ? "" : ", ") + s.name;
  if (name.is_none()) {
    if (specs.size() == 1)
      return specs[0];
    throw dattn::SpecError(where + ": holds " + std::to_string(specs.size()) +
                           " attentions (" + names + "): pass name= to pick one");
  }
  const std::string wanted = nb::cast<std::string>(name);
  for (const auto &s : specs)
    if (s.name == wanted)
      return s;
  throw dattn::SpecError(where + ": no attention named '" + wanted + "' (it defines: " + names +
                         ")");
}

} // namespace

void bindRuntime(nb::module_ &m); // runtime.cpp
void bindRing(nb::module_ &m);    // ring.cpp

NB_MODULE(_dattn, m) {
  m.doc() = "dattn's C++ core: specs, plans and the machine";
  // Translators are tried newest first: the base class is registered first.
  nb::exception<dattn::Error>(m, "Error", PyExc_RuntimeError);
  nb::exception<dattn::ArgumentError>(m, "ArgumentError", PyExc_ValueError);
  nb::exception<dattn::SpecError>(m, "SpecError", PyExc_ValueError);

  nb::class_<dattn::AttentionSpec>(m, "Spec", "One attention of a spec file (immutable).")
      .def_prop_ro("name", [](const dattn::AttentionSpec &s) { return s.name; })
      .def_prop_ro("heads", [](const dattn::AttentionSpec &s) { return s.heads; })
      .def_prop_ro("kv_heads", [](const dattn::AttentionSpec &s) { return s.kvHeads; })
      .def_prop_ro("head_dim", [](const dattn::AttentionSpec &s) { return s.headDim; })
      .def_prop_ro("dtype", [](const dattn::AttentionSpec &s) { return std::string(toString(s.dtype)); })
      .def_prop_ro("causal", [](const dattn::AttentionSpec &s) { return s.causal; })
      .def_prop_ro("ring", [](const dattn::AttentionSpec &s) { return s.ring; })
      .def_prop_ro("scale", [](const dattn::AttentionSpec &s) { return s.effectiveScale(); })
      .def_prop_ro("num_branches",
                   [](const dattn::AttentionSpec &s) { return s.branches.size(); })
      .def_prop_ro("needs_block_mask", &dattn::AttentionSpec::needsBlockMask)
      .def_prop_ro("block_mask_block",
                   [](const dattn::AttentionSpec &s) {
                     return s.needsBlockMask() ? s.blockMaskBlock() : int64_t(0);
                   },
                   "The block size of the spec's block_mask pattern (0: it has none).")
      .def("canonical", &dattn::AttentionSpec::canonical,
           "The canonical text: every default explicit; parsing it gives an equal spec.")
      .def_static(
          "parse",
          [](const std::string &text, const nb::object &name, const std::string &filename) {
            return pick(parse(text, filename), name, filename);
          },
          "text"_a, "name"_a = nb::none(), "filename"_a = "<string>",
          "The attention of spec text (the one named `name` where it holds several); "
          "raises SpecError with file:line:col.")
      .def_static(
          "load",
          [](const std::string &path, const nb::object &name) {
            return pick(dattn::loadSpecFile(path).attentions, name, path);
          },
          "path"_a, "name"_a = nb::none(),
          "The attention of a spec file (the one named `name` where it holds several); "
          "raises SpecError.")
      .def("__hash__", [](const dattn::AttentionSpec &s) { return s.hash(); })
      .def("__eq__", [](const dattn::AttentionSpec &a, const dattn::AttentionSpec &b) {
        return a.canonical() == b.canonical();
      })
      .def("__repr__", [](const dattn::AttentionSpec &s) {
        return "<dattn.Spec " + s.name + ": " + std::to_string(s.heads) + " heads, head_dim " +
               std::to_string(s.headDim) + ", " + toString(s.dtype) + ", " +
               std::to_string(s.branches.size()) + " branches>";
      });

  m.def("parse", &parse, "text"_a, "filename"_a = "<string>",
        "Parses spec text; raises SpecError with every diagnostic (file:line:col).");
  m.def(
      "load", [](const std::string &path) { return dattn::loadSpecFile(path).attentions; },
      "path"_a, "Reads and parses a spec file; raises SpecError.");
  m.def(
      "plan_ring",
      [](const dattn::AttentionSpec &s, int64_t seq, int ranks) {
        return dattn::ringPlanJson(
            dattn::planRing(dattn::planAttention(s), seq, ranks > 0 ? ranks : s.ring, nullptr,
                            s.hash()),
            s.name);
      },
      "spec"_a, "seq"_a, "ranks"_a = 0,
      "The ring plan as JSON text (see `dattn plan-ring --json`).");
  m.def(
      "attended_pairs",
      [](const dattn::AttentionSpec &s, int64_t seq, int64_t batch) {
        if (s.needsBlockMask())
          throw dattn::Error("attention '" + s.name +
                             "': counting its pairs needs its block mask (not supported here)");
        return dattn::countPairs(dattn::planAttention(s), seq, batch, nullptr).pairs;
      },
      "spec"_a, "seq"_a, "batch"_a = 1,
      "(query, key) pairs the spec attends at sequence length `seq`, summed over heads, "
      "branches and batch: what effective TFLOP/s count (4 * pairs * head_dim per forward).");
  m.def(
      "nvrtc_version", [] { return dattn::nvrtcVersion(); },
      "The version of the NVRTC that compiles for current GPUs; raises Error if none loads.");
  m.def("add_library_dirs", &dattn::addLibraryDirs, "dirs"_a,
        "Folders searched for libnvrtc and libnccl after the copies already loaded and "
        "before CUDA_HOME and the system's (the package adds the NVIDIA wheels' on import).");
  m.def("library_dirs", &dattn::libraryDirs, "The folders add_library_dirs gave, in order.");
  m.def("device_count", &dattn::Runtime::deviceCount,
        "GPUs the driver sees (0 without a driver).");
  bindRuntime(m);
  bindRing(m);
}
