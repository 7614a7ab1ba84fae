// RUN: dattn-opt %s -dattn-normalize -split-input-file | FileCheck %s
// The pass's output is a fixed point of the pass:
// RUN: dattn-opt %s -dattn-normalize -split-input-file | dattn-opt -dattn-normalize -split-input-file | FileCheck %s

// Step 1: folds to simpler equal forms.
// CHECK-LABEL: dattn.attention @folds
// CHECK: dattn.branch heads [0] {
// CHECK-NEXT: dattn.dense
// CHECK-NEXT: }
// CHECK: dattn.branch heads [1] {
// CHECK-NEXT: dattn.dense
// CHECK-NEXT: }
// CHECK: dattn.branch heads [2] {
// CHECK-NEXT: dattn.dense
// CHECK-NEXT: }
// CHECK: dattn.branch heads [3] {
// CHECK-NEXT: dattn.dilated_blocks block 64 rates [1, 2, 8]
// CHECK-NEXT: }
dattn.attention @folds attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [3] {
    dattn.dilated_blocks block 64 rates [8, 2, 1, 2]
  }
  dattn.branch heads [2] {
    dattn.random block 64 density 1.0 seed 3
  }
  dattn.branch heads [1] {
    dattn.dilated dilation 1 offsets [0]
  }
  dattn.branch heads [0] {
    dattn.window
  }
}

// -----

// Under causal masking a window's right extent is 0, and an unbounded-left
// window is dense.
// CHECK-LABEL: dattn.attention @causal_windows
// CHECK: dattn.branch heads [0] {
// CHECK-NEXT: dattn.window left 8 right 0
// CHECK-NEXT: }
// CHECK: dattn.branch heads [1] {
// CHECK-NEXT: dattn.dense
// CHECK-NEXT: }
dattn.attention @causal_windows attributes {causal, dtype = "bf16", head_dim = 64 : i64, heads = 2 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [1] {
    dattn.window right 5
  }
  dattn.branch heads [0] {
    dattn.window left 8 right 100
  }
}

// -----

// Step 2: dense absorbs the union; duplicates, narrower windows and smaller
// globals go; members are sorted.
// CHECK-LABEL: dattn.attention @unions
// CHECK: dattn.branch heads [0] {
// CHECK-NEXT: dattn.dense
// CHECK-NEXT: }
// CHECK: dattn.branch heads [1] {
// CHECK-NEXT: dattn.window left 16 right 4
// CHECK-NEXT: dattn.global tokens 8
// CHECK-NEXT: dattn.random block 32 density 5.000000e-01 seed 1
// CHECK-NEXT: }
dattn.attention @unions attributes {dtype = "bf16", head_dim = 64 : i64, heads = 2 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [1] {
    dattn.random block 32 density 0.5 seed 1
    dattn.global tokens 4
    dattn.window left 8 right 4
    dattn.window left 16 right 4
    dattn.global tokens 8
    dattn.random block 32 density 0.5 seed 1
  }
  dattn.branch heads [0] {
    dattn.window left 3 right 3
    dattn.dense
    dattn.global tokens 2
  }
}

// -----

// Step 3: a branch whose union is empty is dropped; identical branches are
// kept (their keys count twice in the multiset).
// CHECK-LABEL: dattn.attention @empties
// CHECK-NOT: dattn.global
// CHECK: dattn.branch heads [0] {
// CHECK-NEXT: dattn.window left 4 right 0
// CHECK-NEXT: }
// CHECK-NEXT: dattn.branch heads [0] {
// CHECK-NEXT: dattn.window left 4 right 0
// CHECK-NEXT: }
// CHECK-NEXT: }
dattn.attention @empties attributes {dtype = "bf16", head_dim = 64 : i64, heads = 1 : i64, kv_heads = 1 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    dattn.global tokens 0
  }
  dattn.branch heads [0] {
    dattn.window left 4 right 0
  }
  dattn.branch heads [0] {
    dattn.window left 4 right 0
  }
}
