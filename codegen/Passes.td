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

def SplitUnions : Pass<"dattn-split-unions", "::mlir::ModuleOp"> {
  let summary = "Run a union's dilated member as its own strided branch";
  let description = [{
    A union with a dilated member and others runs every tile the dilated
    member touches as a partial tile: with dilation r, r^2 times the pairs
    it attends. For each such branch (after dattn-normalize):
    1. Copy the dilated member into a new branch of the same heads (it is
       alone there, so dattn-plan-tiles makes it strided: compact rows, the
       fast kernels).
    2. Mark the member `excluded` in the original branch: that branch keeps
       the other members' pairs minus the dilated ones.
    The two branches are disjoint and their union is the original's, so each
    key counts once; the heads' outputs merge across the two branches as
    for any head in several branches. On by default (PlanOptions::splitUnions;
    DATTN_SPLIT_UNIONS=0 or `dattn compile --no-split-unions` turn it off). A
    union with several dilated members is left as it is.
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
    2. Bound the tile sizes (block_m x block_n) by head_dim, the compact
       segment length and the smallest block size (tiles inside one block:
       kept block pairs are full tiles), unless given as options.
    3. Record both as #dattn.tiles on the branch. The members' closed-form
       iterators are the pattern ops themselves; nothing recorded grows
       with N.
  }];
  let options = [
    Option<"tileM", "tile-m", "int64_t", "0", "query tile rows (0 = heuristic)">,
    Option<"tileN", "tile-n", "int64_t", "0", "key tile rows (0 = heuristic)">,
  ];
  let dependentDialects = ["::dattn::ir::DattnDialect"];
}

def SelectKernels : Pass<"dattn-select-kernels", "::mlir::ModuleOp"> {
  let summary = "Ask the kernel families for every branch's kernels on one target";
  let description = [{
    1. Read each attention's plan (plan-tiles must have run).
    2. For every branch and stage (forward, backward,
       backward_deterministic), take the first kernel family that supports
       the branch on the target (the `families` option's first, then the
       preference order), with the configuration `tuned` gives for
       (branch, stage, family) when it is among the family's candidates,
       else the family's heuristic configuration.
    3. Record them as #dattn.kernel attributes in the branch's `kernels`
       (with where each configuration came from), and the target on the
       attention (`target`, `smem_bytes`).
    A branch that no family runs is an error naming the attention and every
    family's reason. Codegen reads the choices; nothing else picks a kernel.
  }];
  let options = [
    Option<"arch", "arch", "std::string", "\"sm_80\"", "the target: sm_XY or sm_XYa">,
    Option<"smemBytes", "smem-bytes", "int64_t", "0",
           "shared memory per block (0 = the arch's usual)">,
    ListOption<"tuned", "tuned", "std::string",
               "configurations measured by the autotuner, each "
               "branch/stage/family/block_m/block_n/row_tiles/atomic_dq/origin">,
    ListOption<"families", "families", "std::string",
               "kernel families tried before the preference order where they "
               "support the branch">,
  ];
  let dependentDialects = ["::dattn::ir::DattnDialect"];
}

def ShardRing : Pass<"dattn-shard-ring", "::mlir::ModuleOp"> {
  let summary = "Plan what every rank of a ring receives, for one sequence length";
  let description = [{
    1. Read each attention's plan (plan-tiles must have run); the ring size
       is the `ranks` option, else the attention's `ring`.
    2. Compute the ring plan (include/dattn/ring.h): per rank, peer and kv
       head, the K/V rows its queries reach, as arithmetic progressions in
       closed form per pattern (nothing N^2 or N * P is stored).
    3. Record per branch its primitive and the rows it brings
       (#dattn.ring), and on the attention the bytes that cross the wire
       (`ring_ranks`, `ring_bytes_forward`, `ring_bytes_backward`).
    Block masks are run-time data: an attention with block_mask is an error
    here (the runtime plans it with the mask).
  }];
  let options = [
    Option<"seq", "seq", "int64_t", "0", "the sequence length N (required)">,
    Option<"ranks", "ranks", "int64_t", "0", "the ring size (0 = the attention's ring)">,
  ];
  let dependentDialects = ["::dattn::ir::DattnDialect"];
}

#endif // DATTN_PASSES_TD
