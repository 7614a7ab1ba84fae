// dattn-opt: runs dattn passes on a .mlir file, as mlir-opt does for
// upstream dialects. Used by the lit tests: one pass at a time.
#include "Dialect.h"
#include "Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<dattn::ir::DattnDialect>();
  dattn::ir::registerDattnPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "dattn optimizer driver\n", registry));
}
