// Verifier errors: each op restates the language's rules.
// RUN: dattn-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{kv_heads (3) must divide heads (4)}}
dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 3 : i64, precision = "ieee", ring = 1 : i64} {
}

// -----

// expected-error @+1 {{head_dim must be a multiple of 8 in [32, 256], got 60}}
dattn.attention @a attributes {dtype = "bf16", head_dim = 60 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
}

// -----

// expected-error @+1 {{precision tf32 applies to dtype fp32 only}}
dattn.attention @a attributes {dtype = "fp16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "tf32", ring = 1 : i64} {
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  // expected-error @+1 {{head 4 is outside [0, 4)}}
  dattn.branch heads [1, 4] {
    dattn.dense
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  // expected-error @+1 {{heads must be sorted and unique}}
  dattn.branch heads [2, 1] {
    dattn.dense
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0, 1] {
    // expected-error @+1 {{needs one offset per branch head (2), got 1}}
    dattn.dilated segment 16 dilation 2 offsets [0]
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    // expected-error @+1 {{offset 2 is outside [0, dilation = 2)}}
    dattn.dilated segment 16 dilation 2 offsets [2]
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    // expected-error @+1 {{dilation must be >= 1, got 0}}
    dattn.dilated segment 16 dilation 0 offsets [0]
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    // expected-error @+1 {{window extents must be >= 0}}
    dattn.window left -1 right 0
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    // expected-error @+1 {{block must be a power of two in [16, 4096], got 48}}
    dattn.random block 48 density 0.5 seed 1
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    // expected-error @+1 {{density must be in (0, 1], got 0}}
    dattn.random block 64 density 0.0 seed 1
  }
}

// -----

// expected-error @+1 {{has 2 block_mask patterns; at most one is allowed}}
dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    dattn.block_mask block 64
  }
  dattn.branch heads [1] {
    dattn.block_mask block 64
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  // expected-error @+1 {{plan needs kind = "strided" or "blocks", got "diagonal"}}
  dattn.branch heads [0] attributes {plan = #dattn.tiles<kind = "diagonal", block_m = 64, block_n = 64>} {
    dattn.dense
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  // expected-error @+1 {{plan needs block_n = a power of two in [16, 256], got 48}}
  dattn.branch heads [0] attributes {plan = #dattn.tiles<kind = "blocks", block_m = 64, block_n = 48>} {
    dattn.dense
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  // expected-error @+1 {{no kernel family is named "sm70_wmma"}}
  dattn.branch heads [0] attributes {kernels = [#dattn.kernel<stage = "forward", family = "sm70_wmma", block_m = 64, block_n = 64, row_tiles = 1, atomic_dq = false, candidates = 1, origin = "heuristic">]} {
    dattn.dense
  }
}

// -----

dattn.attention @a attributes {dtype = "bf16", head_dim = 64 : i64, heads = 4 : i64, kv_heads = 4 : i64, precision = "ieee", ring = 1 : i64} {
  dattn.branch heads [0] {
    // expected-error @+1 {{needs 1 to 16 rates, got 0}}
    dattn.dilated_blocks block 64 rates []
  }
}

// -----

// expected-error @+1 {{'dattn.dense' op expects parent op 'dattn.branch'}}
dattn.dense
