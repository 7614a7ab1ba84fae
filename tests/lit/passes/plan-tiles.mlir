// RUN: dattn-opt %s -dattn-plan-tiles -split-input-file | FileCheck %s
// RUN: dattn-opt %s -dattn-plan-tiles="tile-m=64 tile-n=32" -split-input-file | FileCheck %s --check-prefix=FORCED
// RUN: not dattn-opt %s -dattn-plan-tiles="tile-m=48" -split-input-file 2>&1 | FileCheck %s --check-prefix=BADTILE

// BADTILE: tile-m and tile-n must be 0 or a power of two in [16, 256], got 48 and 0

// A dilated branch alone is strided: dense tiles over rows i = o (mod r).
// A short segment shrinks the tiles to its compact length.
// CHECK-LABEL: dattn.attention @strided
// CHECK: dattn.branch heads [0, 1] attributes {plan = {block_m = 128 : i64, block_n = 64 : i64, compact_rows = 2048 : i64, kind = "strided", q_tiles_per_segment = 16 : i64, row_stride = 4 : i64}}
// CHECK: dattn.branch heads [2] attributes {plan = {block_m = 16 : i64, block_n = 16 : i64, compact_rows = 3 : i64, kind = "strided", q_tiles_per_segment = 1 : i64, row_stride = 6 : i64}}
// CHECK: dattn.branch heads [3] attributes {plan = {block_m = 128 : i64, block_n = 64 : i64, kind = "strided", row_stride = 2 : i64}}
// FORCED-LABEL: dattn.attention @strided
// FORCED: block_m = 64 : i64, block_n = 32 : i64, compact_rows = 2048 : i64, kind = "strided", q_tiles_per_segment = 32 : i64
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

// Everything else iterates blocks; each member records its closed form.
// Key tiles shrink to the smallest block; causal marks the diagonal.
// CHECK-LABEL: dattn.attention @blocks
// CHECK: plan = {block_m = 32 : i64, block_n = 32 : i64, diagonal = "partial", kind = "blocks", members = [{iter = "band", key_tiles_max = 12 : i64, left = 256 : i64, right = 64 : i64}, {iter = "prefix", tokens = 16 : i64}, {iter = "hash"}, {iter = "hierarchy", reach_blocks = 8 : i64}]}
// CHECK: plan = {block_m = 64 : i64, block_n = 64 : i64, diagonal = "partial", kind = "blocks", members = [{iter = "all"}]}
// CHECK: plan = {block_m = 64 : i64, block_n = 64 : i64, diagonal = "partial", kind = "blocks", members = [{iter = "band", right = 0 : i64}, {iter = "segment_masked"}, {iter = "block_offsets", reach_blocks = 4 : i64}, {iter = "bsr"}]}
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
