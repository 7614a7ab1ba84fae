// The public face of the middle end: build IR from specs, run the pipeline,
// read plans back. MLIR diagnostics become one dattn::Error.
#include "MLIRGen.h"
#include "Passes.h"
#include "ReadPlan.h"

#include "dattn/compiler.h"
#include "dattn/error.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace mlir;

namespace dattn {
namespace {

/// Collects every diagnostic MLIR emits while alive, with its location.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(MLIRContext &ctx)
      : handler_(&ctx, [this](Diagnostic &d) {
          std::string s;
          llvm::raw_string_ostream os(s);
          os << d.getLocation() << ": " << d.str();
          messages_ += os.str() + "\n";
          return success();
        }) {}
  const std::string &messages() const { return messages_; }

private:
  std::string messages_;
  ScopedDiagnosticHandler handler_;
};

OwningOpRef<ModuleOp> lower(MLIRContext &ctx, const std::vector<AttentionSpec> &specs,
                            IRStage stage, const PlanOptions &options) {
  DiagnosticCollector diags(ctx);
  OwningOpRef<ModuleOp> module = ir::buildModule(ctx, specs);
  if (failed(verify(*module)))
    throw Error("codegen: the generated IR does not verify:\n" + diags.messages());
  if (stage == IRStage::Generated)
    return module;
  PassManager pm(&ctx);
  ir::PipelineOptions po;
  po.tileM = options.tileM;
  po.tileN = options.tileN;
  po.arch = options.arch;
  po.smemBytes = options.smemBytes;
  for (const TunedKernel &t : options.tuned)
    po.tuned.push_back(t.str());
  po.families = options.families;
  po.splitUnions = options.splitUnions;
  ir::buildPipeline(pm, po);
  if (failed(pm.run(*module)))
    throw Error("codegen: the pass pipeline failed:\n" + diags.messages());
  return module;
}

} // namespace

std::string emitIR(const std::vector<AttentionSpec> &specs, IRStage stage,
                   const PlanOptions &options, bool locations) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = lower(ctx, specs, stage, options);
  std::string s;
  llvm::raw_string_ostream os(s);
  OpPrintingFlags flags;
  if (locations)
    flags.enableDebugInfo(/*enable=*/true, /*prettyForm=*/true);
  module->print(os, flags);
  return os.str();
}

AttentionPlan planAttention(const AttentionSpec &spec, const PlanOptions &options) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = lower(ctx, {spec}, IRStage::Planned, options);
  AttentionPlan out;
  module->walk([&](ir::AttentionOp att) { out = ir::readPlan(att); });
  return out;
}

} // namespace dattn
