// RUN: dattn-opt %s -dattn-split-unions -split-input-file | FileCheck %s
// RUN: dattn-opt %s -dattn-split-unions -dattn-normalize -split-input-file | FileCheck %s --check-prefix=NORM

// A union with one dilated member: the member alone in a new branch of the
// same heads, excluded from the union it came from; the printed form reads
// back (roundtrip through the parser above).
// CHECK-LABEL: dattn.attention @union
// CHECK: dattn.branch heads [0, 1] {
// CHECK-NEXT: dattn.global tokens 16
// CHECK-NEXT: dattn.dilated dilation 4 offsets [0, 1] excluded
// CHECK-NEXT: }
// CHECK: dattn.branch heads [0, 1] {
// CHECK-NEXT: dattn.dilated dilation 4 offsets [0, 1]
// CHECK-NEXT: }
// NORM-LABEL: dattn.attention @union
// NORM: dattn.dilated dilation 4 offsets [0, 1] excluded
dattn.attention @union attributes {causal, dtype = "bf16", head_dim = 64 : i64, heads = 2 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0, 1] {
    dattn.global tokens 16
    dattn.dilated dilation 4 offsets [0, 1]
  }
}

// -----

// Nothing to split: a lone dilated member, and a union of two dilated ones.
// CHECK-LABEL: dattn.attention @kept
// CHECK: dattn.branch heads [0] {
// CHECK-NEXT: dattn.dilated segment 64 dilation 2 offsets [0]
// CHECK-NEXT: }
// CHECK: dattn.branch heads [1] {
// CHECK-NEXT: dattn.dilated segment 64 dilation 2 offsets [1]
// CHECK-NEXT: dattn.dilated segment 128 dilation 4 offsets [1]
// CHECK-NEXT: }
// CHECK-NOT: excluded
dattn.attention @kept attributes {dtype = "bf16", head_dim = 64 : i64, heads = 2 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    dattn.dilated segment 64 dilation 2 offsets [0]
  }
  dattn.branch heads [1] {
    dattn.dilated segment 64 dilation 2 offsets [1]
    dattn.dilated segment 128 dilation 4 offsets [1]
  }
}

// -----

// Normalizing after a split keeps an excluded member: dense absorbs members
// that add pairs, not one that takes them out, and an excluded unsegmented
// dilation-1 member is not folded into dense.
// CHECK-LABEL: dattn.attention @dense
// NORM-LABEL: dattn.attention @dense
// NORM: dattn.dense
// NORM-NEXT: dattn.dilated dilation 1 offsets [0] excluded
dattn.attention @dense attributes {dtype = "bf16", head_dim = 64 : i64, heads = 1 : i64, kv_heads = 1 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    dattn.dense
    dattn.dilated dilation 1 offsets [0] excluded
  }
}
