// Printing and parsing the dialect is lossless.
// RUN: dattn-opt %s | dattn-opt | FileCheck %s

// CHECK-LABEL: dattn.attention @every_pattern
// CHECK-SAME: causal
// CHECK: dattn.branch heads [0, 1]
// CHECK-NEXT: dattn.dilated segment 2048 dilation 2 offsets [0, 1]
// CHECK-NEXT: }
// CHECK: dattn.branch heads [2]
// CHECK-NEXT: dattn.dilated dilation 4 offsets [3]
// CHECK-NEXT: dattn.window left 128 right 0
// CHECK-NEXT: dattn.window right 4
// CHECK-NEXT: dattn.global tokens 16
// CHECK-NEXT: dattn.dense
// CHECK-NEXT: dattn.random block 64 density 1.000000e-01 seed 7
// CHECK-NEXT: dattn.dilated_blocks block 32 rates [1, 4]
// CHECK-NEXT: dattn.hierarchical block 16 levels 3
// CHECK-NEXT: dattn.block_mask block 64
dattn.attention @every_pattern attributes {causal, dtype = "bf16", head_dim = 128 : i64, heads = 4 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 2 : i64} {
  dattn.branch heads [0, 1] {
    dattn.dilated segment 2048 dilation 2 offsets [0, 1]
  }
  dattn.branch heads [2] {
    dattn.dilated dilation 4 offsets [3]
    dattn.window left 128 right 0
    dattn.window right 4
    dattn.global tokens 16
    dattn.dense
    dattn.random block 64 density 0.1 seed 7
    dattn.dilated_blocks block 32 rates [1, 4]
    dattn.hierarchical block 16 levels 3
    dattn.block_mask block 64
  }
}
