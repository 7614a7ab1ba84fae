// RUN: dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_90a" -split-input-file | FileCheck %s
// RUN: dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_75" -split-input-file | FileCheck %s --check-prefix=SIMT
// RUN: dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_90a" -split-input-file | dattn-opt -split-input-file | FileCheck %s
// RUN: not dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_80a" -split-input-file 2>&1 | FileCheck %s --check-prefix=BADARCH
// RUN: not dattn-opt %s -dattn-select-kernels="arch=sm_90" -split-input-file 2>&1 | FileCheck %s --check-prefix=NOPLAN
// RUN: dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_90 tuned=0/forward/sm80_mma_forward/64/64/1/0/user:/tmp/t.json,0/backward/sm80_mma_backward_dkv/64/256/0/1/shipped,0/backward_deterministic/sm80_mma_backward_dq/32/16/0/0/shipped" -split-input-file | FileCheck %s --check-prefix=TUNED
// RUN: dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_90a tuned=0/forward/sm90_wgmma_forward/128/128/1/0/shipped" -split-input-file | FileCheck %s --check-prefix=OTHER
// RUN: dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_90 tuned=0/forward/sm90_wgmma_forward/128/128/1/0/shipped" -split-input-file | FileCheck %s --check-prefix=NOTHERE
// RUN: dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_90a tuned=0/backward/sm80_mma_backward_dkv/64/128/0/1/shipped" -split-input-file | FileCheck %s --check-prefix=OTHERDKV
// RUN: not dattn-opt %s -dattn-plan-tiles -dattn-select-kernels="arch=sm_90 tuned=0/forward/sm80_mma_forward" -split-input-file 2>&1 | FileCheck %s --check-prefix=BADTUNED

// Measured configurations replace the heuristic's where the family offers
// them (n256 is not a dK/dV candidate: the heuristic stays). A forward
// measured with another family runs that family where it supports the
// branch (the OTHER run), else the heuristic's (the NOTHERE run: plain sm_90
// has no wgmma). So does the dK/dV kernel that adds dQ itself (OTHERDKV);
// the deterministic stage keeps its pair.
// TUNED-LABEL: dattn.attention @strided
// TUNED: #dattn.kernel<stage = "forward", family = "sm80_mma_forward", block_m = 64, block_n = 64, row_tiles = 1, atomic_dq = false, candidates = 21, origin = "user:/tmp/t.json">
// TUNED-SAME: #dattn.kernel<stage = "backward", family = "sm80_mma_backward_dkv", block_m = 64, block_n = 128, row_tiles = 0, atomic_dq = true, candidates = 12, origin = "heuristic">
// TUNED-SAME: #dattn.kernel<stage = "backward_deterministic", family = "sm80_mma_backward_dq", block_m = 32, block_n = 16, row_tiles = 0, atomic_dq = false, candidates = 9, origin = "shipped">
// OTHER-LABEL: dattn.attention @strided
// OTHER: #dattn.kernel<stage = "forward", family = "sm90_wgmma_forward", block_m = 128, block_n = 128, row_tiles = 1, atomic_dq = false, candidates = 1, origin = "shipped">
// OTHERDKV-LABEL: dattn.attention @strided
// OTHERDKV: #dattn.kernel<stage = "backward", family = "sm80_mma_backward_dkv", block_m = 64, block_n = 128, row_tiles = 0, atomic_dq = true, candidates = 12, origin = "shipped">
// OTHERDKV-SAME: #dattn.kernel<stage = "backward_deterministic", family = "sm90_wgmma_ws_backward_dkv", block_m = 64, block_n = 128, row_tiles = 0, atomic_dq = false, candidates = 1, origin = "heuristic">
// NOTHERE-LABEL: dattn.attention @strided
// NOTHERE: #dattn.kernel<stage = "forward", family = "sm80_mma_forward", block_m = 128, block_n = 64, row_tiles = 2, atomic_dq = false, candidates = 21, origin = "heuristic">
// BADTUNED: expected branch/stage/family/block_m/block_n/row_tiles/atomic_dq/origin

// BADARCH: unknown GPU architecture 'sm_80a'
// NOPLAN: dattn-select-kernels: codegen: branch has no plan (plan-tiles did not run)

// A bf16 strided branch on sm_90a: the tensor-core families (the TMA wgmma
// forward and the warp-specialized dK/dV kernel), with a dQ kernel only in the deterministic
// backward stage; the target is recorded.
// On sm_75 every stage falls back to SIMT, whose dQ is its own kernel.
// CHECK-LABEL: dattn.attention @strided
// CHECK-SAME: smem_bytes = 232448 : i64
// CHECK-SAME: target = "sm_90a"
// CHECK: kernels = [#dattn.kernel<stage = "forward", family = "sm90_wgmma_tma_forward", block_m = 128, block_n = 128, row_tiles = 1, atomic_dq = false, candidates = 1, origin = "heuristic">, #dattn.kernel<stage = "backward", family = "sm90_wgmma_ws_backward_dkv", block_m = 64, block_n = 128, row_tiles = 0, atomic_dq = true, candidates = 1, origin = "heuristic">, #dattn.kernel<stage = "backward_deterministic", family = "sm90_wgmma_ws_backward_dkv", block_m = 64, block_n = 128, row_tiles = 0, atomic_dq = false, candidates = 1, origin = "heuristic">, #dattn.kernel<stage = "backward_deterministic", family = "sm80_mma_backward_dq", block_m = 64, block_n = 64, row_tiles = 0, atomic_dq = false, candidates = 9, origin = "heuristic">]
// SIMT-LABEL: dattn.attention @strided
// SIMT: #dattn.kernel<stage = "forward", family = "simt_forward"
// SIMT-SAME: #dattn.kernel<stage = "backward", family = "simt_backward_dkv"
// SIMT-SAME: #dattn.kernel<stage = "backward", family = "simt_backward_dq"
dattn.attention @strided attributes {dtype = "bf16", head_dim = 128 : i64, heads = 2 : i64, kv_heads = 2 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0, 1] {
    dattn.dilated segment 8192 dilation 4 offsets [0, 1]
  }
}

// -----

// fp32 has no tensor-core family (yet): SIMT on every target.
// CHECK-LABEL: dattn.attention @fp32
// CHECK: #dattn.kernel<stage = "forward", family = "simt_forward", block_m = 0, block_n = 0, row_tiles = 0, atomic_dq = false, candidates = 1, origin = "heuristic">
dattn.attention @fp32 attributes {dtype = "fp32", head_dim = 64 : i64, heads = 1 : i64, kv_heads = 1 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    dattn.window left 16 right 16
  }
}
