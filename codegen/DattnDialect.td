//===- DattnDialect.td - the dattn attention dialect ------*- tablegen -*-===//
//
// An attention spec as IR. One `dattn.attention` per attention of a spec
// file; its region holds `dattn.branch` ops; a branch's region holds the
// pattern ops whose union is the branch's key set. Sequence length and batch
// are not in the IR: one compiled plan serves every N.
//
//===----------------------------------------------------------------------===//

#ifndef DATTN_DIALECT_TD
#define DATTN_DIALECT_TD

include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"

def Dattn_Dialect : Dialect {
  let name = "dattn";
  let summary = "Dilated and sparse attention specs, normalized and tile-planned";
  let description = [{
    The semantics are those of docs/semantics.md: a query head and
    row i attend, per branch, to the union of the branch's pattern sets
    (intersected with j <= i when the attention is causal), and branches are
    merged by their log-sum-exp over the multiset union.
  }];
  let cppNamespace = "::dattn::ir";
  let useDefaultAttributePrinterParser = 1;
}

// A signless 64-bit integer read back as int64_t (the builtin I64Attr reads
// uint64_t, which would hide negative values from the verifiers).
def Dattn_I64Attr : TypedSignlessIntegerAttrBase<I64, "int64_t", "64-bit integer attribute"> {
  let convertFromStorage = "$_self.getValue().getSExtValue()";
}

class Dattn_Op<string mnemonic, list<Trait> traits = []>
    : Op<Dattn_Dialect, mnemonic, traits>;

//===----------------------------------------------------------------------===//
// Plan attributes (written by the planning passes, read by codegen)
//===----------------------------------------------------------------------===//

class Dattn_Attr<string name, string attrMnemonic> : AttrDef<Dattn_Dialect, name> {
  let mnemonic = attrMnemonic;
}

def Dattn_TilesAttr : Dattn_Attr<"Tiles", "tiles"> {
  let summary = "how a branch's kernels iterate over its key set";
  let description = [{
    `kind` is "strided" (one dilated pattern: dense tiles over the rows
    i = o (mod r) of each segment) or "blocks" (tiles of the whole sequence,
    each union member classifying tiles as skip, partial or full in closed
    form). `block_m` x `block_n` bound the tile sizes from the branch's
    geometry (the compact rows of a short segment, the smallest block of a
    union); a kernel family picks tiles at or under them.

    Example: `#dattn.tiles<kind = "strided", block_m = 128, block_n = 64>`
  }];
  let parameters = (ins StringRefParameter<"strided or blocks">:$kind, "int64_t":$block_m,
                        "int64_t":$block_n);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Dattn_KernelAttr : Dattn_Attr<"Kernel", "kernel"> {
  let summary = "the kernel family and configuration chosen for one kernel of a branch";
  let description = [{
    Written by `dattn-select-kernels` for one target. `stage` is "forward",
    "backward" or "backward_deterministic" (a backward stage has a dK/dV
    kernel and, unless it adds dQ itself, a dQ kernel); `family` names a
    kernel family (include/dattn/kernels.h) and the other parameters are its
    configuration; `candidates` is how many configurations it offered;
    `origin` says where the configuration came from: "heuristic" (the
    family's) or the tuning database that measured it.

    Example:
    `#dattn.kernel<stage = "forward", family = "sm80_mma_forward", block_m = 128,
      block_n = 64, row_tiles = 2, atomic_dq = false, candidates = 21,
      origin = "heuristic">`
  }];
  let parameters = (ins StringRefParameter<"forward, backward or backward_deterministic">:$stage,
                        StringRefParameter<"a kernel family's name">:$family,
                        "int64_t":$block_m, "int64_t":$block_n, "int64_t":$row_tiles,
                        "bool":$atomic_dq, "int64_t":$candidates,
                        StringRefParameter<"heuristic, or the tuning database">:$origin);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Dattn_KernelArrayAttr : TypedArrayAttrBase<Dattn_KernelAttr, "kernel choices">;

def Dattn_RingAttr : Dattn_Attr<"Ring", "ring"> {
  let summary = "how a branch's remote keys reach each rank of a ring";
  let description = [{
    Written by `dattn-shard-ring` for one sequence length and ring size.
    `primitive` is "local" (every segment inside a shard), "halo" (windows),
    "gather" (packed rows per peer and kv head: dilated r > 1, global tokens,
    block-sparse, unions) or "ring" (dense segments spanning shards); `rows`
    counts the K/V rows the branch brings to all ranks (per kv head).

    Example: `#dattn.ring<primitive = "gather", rows = 98304>`
  }];
  let parameters = (ins StringRefParameter<"local, halo, gather or ring">:$primitive,
                        "int64_t":$rows);
  let assemblyFormat = "`<` struct(params) `>`";
}

//===----------------------------------------------------------------------===//
// Structure
//===----------------------------------------------------------------------===//

def Dattn_AttentionOp : Dattn_Op<"attention",
    [Symbol, NoTerminator, SingleBlock, IsolatedFromAbove,
     HasParent<"::mlir::ModuleOp">]> {
  let summary = "one attention: shapes, dtype and its branches";
  let description = [{
    Holds the spec-level settings and a region of `dattn.branch` ops.
    `kv_heads` divides `heads` (query head h reads kv head h / (heads /
    kv_heads)); `scale` absent means 1/sqrt(head_dim); `causal` intersects
    every key set with j <= i in global row positions; `ring` is the number
    of sequence shards. An attention with no branch is legal: every row is
    empty (O = 0, LSE = -inf).

    Example:
    ```mlir
    dattn.attention @longnet attributes {heads = 12 : i64, kv_heads = 12 : i64,
        head_dim = 128 : i64, dtype = "bf16", precision = "ieee", ring = 1 : i64} {
      dattn.branch heads [0, 1, 2, 3] {
        dattn.dilated segment 2048 dilation 1 offsets [0, 0, 0, 0]
      }
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, Dattn_I64Attr:$heads, Dattn_I64Attr:$kv_heads,
                       Dattn_I64Attr:$head_dim, StrAttr:$dtype, StrAttr:$precision,
                       OptionalAttr<F64Attr>:$scale, UnitAttr:$causal, Dattn_I64Attr:$ring,
                       OptionalAttr<StrAttr>:$ring_layout);
  let regions = (region SizedRegion<1>:$branches);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $branches";
  let hasVerifier = 1;
}

def Dattn_BranchOp : Dattn_Op<"branch",
    [NoTerminator, SingleBlock, HasParent<"AttentionOp">]> {
  let summary = "a head set and the union of its patterns";
  let description = [{
    `heads` is sorted, unique and inside [0, heads). The region holds pattern
    ops; the branch's key set is their union. After `dattn-plan-tiles`,
    `plan` (#dattn.tiles) says how kernels iterate over it; after
    `dattn-select-kernels`, `kernels` lists the kernel family and
    configuration of each of its kernels for the chosen target; after
    `dattn-shard-ring`, `ring` says how its remote keys reach each rank.
  }];
  let arguments = (ins DenseI64ArrayAttr:$heads, OptionalAttr<Dattn_TilesAttr>:$plan,
                       OptionalAttr<Dattn_KernelArrayAttr>:$kernels,
                       OptionalAttr<Dattn_RingAttr>:$ring);
  let regions = (region SizedRegion<1>:$terms);
  let assemblyFormat = "`heads` $heads attr-dict-with-keyword $terms";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Patterns (each sits in a dattn.branch)
//===----------------------------------------------------------------------===//

class Dattn_PatternOp<string mnemonic, list<Trait> traits = []>
    : Dattn_Op<mnemonic, !listconcat(traits, [HasParent<"BranchOp">])>;

def Dattn_DilatedOp : Dattn_PatternOp<"dilated"> {
  let summary = "LongNet dilated attention";
  let description = [{
    Row i of head h (the k-th head of the branch) has keys
    { j : j / segment == i / segment, j mod dilation == offsets[k] } when
    i mod dilation == offsets[k], and none otherwise. No `segment` means the
    whole sequence is one segment. `excluded` (set by dattn-split-unions,
    never by a spec) takes these pairs out of the branch's union instead:
    another branch of the same heads attends to them.
  }];
  let arguments = (ins OptionalAttr<Dattn_I64Attr>:$segment, Dattn_I64Attr:$dilation,
                       DenseI64ArrayAttr:$offsets, UnitAttr:$excluded);
  let assemblyFormat = "(`segment` $segment^)? `dilation` $dilation `offsets` $offsets "
                       "(`excluded` $excluded^)? attr-dict";
  let hasVerifier = 1;
}

def Dattn_WindowOp : Dattn_PatternOp<"window"> {
  let summary = "sliding window: i - left <= j <= i + right";
  let description = [{ A missing `left` or `right` is unbounded on that side. }];
  let arguments = (ins OptionalAttr<Dattn_I64Attr>:$left, OptionalAttr<Dattn_I64Attr>:$right);
  let assemblyFormat = "(`left` $left^)? (`right` $right^)? attr-dict";
  let hasVerifier = 1;
}

def Dattn_GlobalOp : Dattn_PatternOp<"global"> {
  let summary = "global tokens: j < tokens, and every j when i < tokens";
  let arguments = (ins Dattn_I64Attr:$tokens);
  let assemblyFormat = "`tokens` $tokens attr-dict";
  let hasVerifier = 1;
}

def Dattn_DenseOp : Dattn_PatternOp<"dense"> {
  let summary = "every key";
  let assemblyFormat = "attr-dict";
}

def Dattn_RandomOp : Dattn_PatternOp<"random"> {
  let summary = "random block pairs, kept by a hash of (seed, head, I, J)";
  let arguments = (ins Dattn_I64Attr:$block, F64Attr:$density, Dattn_I64Attr:$seed);
  let assemblyFormat = "`block` $block `density` $density `seed` $seed attr-dict";
  let hasVerifier = 1;
}

def Dattn_DilatedBlocksOp : Dattn_PatternOp<"dilated_blocks"> {
  let summary = "block pairs with J - I in {0} or +-rate";
  let arguments = (ins Dattn_I64Attr:$block, DenseI64ArrayAttr:$rates);
  let assemblyFormat = "`block` $block `rates` $rates attr-dict";
  let hasVerifier = 1;
}

def Dattn_HierarchicalOp : Dattn_PatternOp<"hierarchical"> {
  let summary = "block pairs at exponentially coarser levels";
  let description = [{
    Keeps (I, J) iff for some level l < levels, J is a multiple of 2^l and
    |I / 2^l - J / 2^l| <= 1.
  }];
  let arguments = (ins Dattn_I64Attr:$block, Dattn_I64Attr:$levels);
  let assemblyFormat = "`block` $block `levels` $levels attr-dict";
  let hasVerifier = 1;
}

def Dattn_BlockMaskOp : Dattn_PatternOp<"block_mask"> {
  let summary = "block pairs given at run time as a BSR mask";
  let arguments = (ins Dattn_I64Attr:$block);
  let assemblyFormat = "`block` $block attr-dict";
  let hasVerifier = 1;
}

#endif // DATTN_DIALECT_TD
