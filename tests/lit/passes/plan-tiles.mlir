// RUN: dattn-opt %s -dattn-plan-tiles -split-input-file | FileCheck %s
// RUN: dattn-opt %s -dattn-plan-tiles="tile-m=64 tile-n=32" -split-input-file | FileCheck %s --check-prefix=FORCED
// RUN: not dattn-opt %s -dattn-plan-tiles="tile-m=48" -split-input-file 2>&1 | FileCheck %s --check-prefix=BADTILE

// BADTILE: tile-m and tile-n must be 0 or a power of two in [16, 256], got 48 and 0

// A dilated branch alone is strided: dense tiles over rows i = o (mod r).
// A short segment shrinks the tiles to its compact length.
// CHECK-LABEL: dattn.attention @strided
// CHECK: dattn.branch heads [0, 1] attributes {plan = #dattn.tiles<kind = "strided", block_m = 128, block_n = 64>}
// CHECK: dattn.branch heads [2] attributes {plan = #dattn.tiles<kind = "strided", block_m = 16, block_n = 16>}
// CHECK: dattn.branch heads [3] attributes {plan = #dattn.tiles<kind = "strided", block_m = 128, block_n = 64>}
// FORCED-LABEL: dattn.attention @strided
// FORCED-COUNT-3: #dattn.tiles<kind = "strided", block_m = 64, block_n = 32>
dattn.attention @strided attributes {dtype = "bf16", head_dim = 128 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0, 1] {
    dattn.dilated segment 8192 dilation 4 offsets [0, 1]
  }
  dattn.branch heads [2] {
    dattn.dilated segment 13 dilation 6 offsets [5]
  }
  dattn.branch heads [3] {
    dattn.dilated dilation 2 offsets [1]
  }
}

// -----

// Everything else iterates blocks (each member is its own closed-form
// iterator). Tiles shrink to the smallest block; head_dim 256 halves the
// query tile. A lone dense member is one unbounded segment of dilation 1,
// so it runs strided.
// CHECK-LABEL: dattn.attention @blocks
// CHECK: plan = #dattn.tiles<kind = "blocks", block_m = 32, block_n = 32>
// CHECK: plan = #dattn.tiles<kind = "strided", block_m = 64, block_n = 64>
// CHECK: plan = #dattn.tiles<kind = "blocks", block_m = 64, block_n = 64>
dattn.attention @blocks attributes {causal, dtype = "fp16", head_dim = 256 : i64, heads = 3 : i64, kv_heads = 1 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    dattn.window left 256 right 64
    dattn.global tokens 16
    dattn.random block 64 density 0.1 seed 1
    dattn.hierarchical block 32 levels 3
  }
  dattn.branch heads [1] {
    dattn.dense
  }
  dattn.branch heads [2] {
    dattn.window right 0
    dattn.dilated segment 16 dilation 2 offsets [0]
    dattn.dilated_blocks block 64 rates [1, 4]
    dattn.block_mask block 64
  }
}
