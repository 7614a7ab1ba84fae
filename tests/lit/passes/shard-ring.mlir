// RUN: dattn-opt %s -dattn-plan-tiles -dattn-shard-ring="seq=65536" -split-input-file | FileCheck %s
// RUN: dattn-opt %s -dattn-plan-tiles -dattn-shard-ring="seq=4096 ranks=2" -split-input-file | FileCheck %s --check-prefix=TWO
// RUN: not dattn-opt %s -dattn-plan-tiles -dattn-shard-ring -split-input-file 2>&1 | FileCheck %s --check-prefix=NOSEQ
// RUN: not dattn-opt %s -dattn-shard-ring="seq=64" -split-input-file 2>&1 | FileCheck %s --check-prefix=NOPLAN

// NOSEQ: the option seq (N >= 1) is required
// NOPLAN: dattn-shard-ring: codegen: branch has no plan (plan-tiles did not run)

// A causal window and a dilated view with global tokens over 4 shards of
// 16384 rows (the causal_ring example): the window needs a halo of 1024
// rows from the previous rank, per kv head; the dilated branch gathers
// rows of its residue classes (here, with every offset on one kv head,
// whole peer shards) and the global tokens.
// CHECK-LABEL: dattn.attention @causal_ring
// CHECK-SAME: ring_bytes_backward = 155713536 : i64
// CHECK-SAME: ring_bytes_forward = 51904512 : i64
// CHECK-SAME: ring_ranks = 4 : i64
// CHECK: ring = #dattn.ring<primitive = "halo", rows = 3072>
// CHECK: ring = #dattn.ring<primitive = "gather", rows = 98304>
// TWO-LABEL: dattn.attention @causal_ring
// TWO-SAME: ring_ranks = 2 : i64
dattn.attention @causal_ring attributes {causal, dtype = "bf16", head_dim = 128 : i64, heads = 8 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 4 : i64} {
  dattn.branch heads [0, 1, 2, 3] {
    dattn.window left 1024 right 0
  }
  dattn.branch heads [4, 5, 6, 7] {
    dattn.dilated dilation 4 offsets [0, 1, 2, 3]
    dattn.global tokens 16
  }
}

// -----

// Segments inside shards: nothing moves.
// CHECK-LABEL: dattn.attention @local
// CHECK-SAME: ring_bytes_forward = 0 : i64
// CHECK: ring = #dattn.ring<primitive = "local", rows = 0>
dattn.attention @local attributes {dtype = "bf16", head_dim = 128 : i64, heads = 2 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 4 : i64} {
  dattn.branch heads [0, 1] {
    dattn.dilated segment 2048 dilation 2 offsets [0, 1]
  }
}
