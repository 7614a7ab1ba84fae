//===- Passes.td - dattn passes ---------------------------*- tablegen -*-===//

#ifndef DATTN_PASSES_TD
#define DATTN_PASSES_TD

include "mlir/Pass/PassBase.td"

def Normalize : Pass<"dattn-normalize", "::mlir::ModuleOp"> {
  let summary = "Fold trivial patterns and put every attention in canonical order";
  let description = [{
    1. Fold each pattern to its simplest equal form: an unbounded window is
       dense; under causal masking a window's right extent is 0 and an
       unbounded-left window is dense; an unsegmented dilation-1 pattern is
       dense; random with density 1 is dense; rates are sorted and unique.
    2. Within a branch's union: dense absorbs everything; drop duplicates,
       windows inside wider windows, globals inside larger globals, and
       empty patterns (global with 0 tokens).
    3. Drop branches whose union became empty (they add nothing to any row's
       multiset). Identical branches are kept: a key reachable through two
       branches counts twice.
    4. Sort union members and then branches into a canonical order.
  }];
  let dependentDialects = ["::dattn::ir::DattnDialect"];
}

def MergeBranches : Pass<"dattn-merge-branches", "::mlir::ModuleOp"> {
  let summary = "Merge branches of the same geometry on disjoint heads";
  let description = [{
    1. Key each branch by its union with dilated offsets left out.
    2. Within a key, fold branches whose head sets are disjoint into one
       branch over the union of heads, carrying a per-head offset table.
    This is exact: every head still has the same key set, and one launch
    then covers what were several.
  }];
  let dependentDialects = ["::dattn::ir::DattnDialect"];
}

def PlanTiles : Pass<"dattn-plan-tiles", "::mlir::ModuleOp"> {
  let summary = "Attach the tile iteration structure to every branch";
  let description = [{
    1. Choose the kind: "strided" for a branch that is one dilated pattern
       (dense tiles over the rows i = o mod r of each segment), else
       "blocks" (tiles of the whole sequence, classified per member).
    2. Choose tile sizes (block_m x block_n) from head_dim, the compact
       segment length and the smallest block size (tiles inside one block:
       kept block pairs are full tiles), unless given as options.
    3. Record per member its closed-form iterator (band, prefix, all, hash,
       block_offsets, hierarchy, bsr, segment_masked) and the bounds that do
       not depend on N. Nothing recorded grows with N.
  }];
  let options = [
    Option<"tileM", "tile-m", "int64_t", "0", "query tile rows (0 = heuristic)">,
    Option<"tileN", "tile-n", "int64_t", "0", "key tile rows (0 = heuristic)">,
  ];
  let dependentDialects = ["::dattn::ir::DattnDialect"];
}

#endif // DATTN_PASSES_TD
