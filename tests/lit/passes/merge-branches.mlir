// RUN: dattn-opt %s -dattn-merge-branches -split-input-file | FileCheck %s

// Same geometry on disjoint heads: one branch with a per-head offset table.
// CHECK-LABEL: dattn.attention @offsets
// CHECK: dattn.branch heads [0, 1, 2, 3] {
// CHECK-NEXT: dattn.dilated segment 64 dilation 4 offsets [3, 0, 1, 2]
// CHECK-NEXT: }
// CHECK-NOT: dattn.branch
dattn.attention @offsets attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [1] {
    dattn.dilated segment 64 dilation 4 offsets [0]
  }
  dattn.branch heads [0, 3] {
    dattn.dilated segment 64 dilation 4 offsets [3, 2]
  }
  dattn.branch heads [2] {
    dattn.dilated segment 64 dilation 4 offsets [1]
  }
}

// -----

// Overlapping heads never merge (each branch adds to the head's multiset);
// different geometry never merges.
// CHECK-LABEL: dattn.attention @kept_apart
// CHECK: dattn.branch heads [0, 1] {
// CHECK-NEXT: dattn.window left 8 right 0
// CHECK: dattn.branch heads [1, 2] {
// CHECK-NEXT: dattn.window left 8 right 0
// CHECK: dattn.branch heads [3] {
// CHECK-NEXT: dattn.dilated segment 32 dilation 2 offsets [1]
dattn.attention @kept_apart attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0, 1] {
    dattn.window left 8 right 0
  }
  dattn.branch heads [1, 2] {
    dattn.window left 8 right 0
  }
  dattn.branch heads [3] {
    dattn.dilated segment 32 dilation 2 offsets [1]
  }
}

// -----

// Unions merge member by member.
// CHECK-LABEL: dattn.attention @unions
// CHECK: dattn.branch heads [0, 1] {
// CHECK-NEXT: dattn.global tokens 4
// CHECK-NEXT: dattn.dilated segment 16 dilation 2 offsets [0, 1]
// CHECK-NEXT: }
// CHECK-NOT: dattn.branch
dattn.attention @unions attributes {dtype = "bf16", head_dim = 64 : i64, heads = 2 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    dattn.global tokens 4
    dattn.dilated segment 16 dilation 2 offsets [0]
  }
  dattn.branch heads [1] {
    dattn.global tokens 4
    dattn.dilated segment 16 dilation 2 offsets [1]
  }
}
