// Float weights (`W`: f16 or f32), read as vec4s: 16 (8 for f16) bytes a load.

@group(0) @binding(5) var<storage, read> w: array<vec4<W>>;

// Element i of the weight chunk (row-major, rows of node.k).
fn ws(i: u32) -> f32 { return f32(w[i >> 2u][i & 3u]); }

// Elements e .. e + 3 of row `row` (e and node.k multiples of 4).
fn w4(row: u32, e: u32) -> vec4<f32> { return vec4<f32>(w[(row * node.k + e) >> 2u]); }
