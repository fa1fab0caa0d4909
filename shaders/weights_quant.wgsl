// Block-quantized weights (ggml's Q8_0, Q4_0, Q4_1: blocks of 32 values along a row), read
// as the file stores them and dequantized as they are loaded. The loader prepends the
// type's constants:
//   Q_BITS    4 or 8 bits a value
//   Q_VEC4S   vec4<u32>s of one block's values (1 or 2)
//   Q_MIN     the block carries a min m beside its scale d (Q4_1: x = d * q + m)
//   Q_OFFSET  else x = d * (q + Q_OFFSET) (Q4_0: -8; Q8_0: 0, q signed)
// The upload (runtime/backend/wgpu/weights.rs) moves each block's scale apart from its
// values, so values load as whole vec4s; the bits are the file's. A chunk of node.n rows
// of node.k values is:
//   [rows x blocks] x Q_VEC4S vec4<u32>: block (r, b) at (r * B + b) * Q_VEC4S, B = K / 32;
//     4 bits: byte j holds value j (low nibble) and value j + 16 (high nibble), as in ggml;
//     8 bits: byte j holds value j;
//   then the scales: Q4_1 one u32 per block (d | m << 16, f16 each), the others one f16 d
//     per block, two per u32.

@group(0) @binding(5) var<storage, read> w: array<vec4<u32>>;

const QK: u32 = 32u;

fn qword(i: u32) -> u32 { return w[i >> 2u][i & 3u]; }

// (d, c) of block `blk` (r * B + b) of the chunk: a value is d * q + c.
fn q_scale(blk: u32) -> vec2<f32> {
    let base = node.n * (node.k / QK) * Q_VEC4S * 4u;
    if (Q_MIN) { return unpack2x16float(qword(base + blk)); }
    let d = unpack2x16float(qword(base + blk / 2u))[blk & 1u];
    return vec2<f32>(d, Q_OFFSET * d);
}

// The four bytes of a word as values: unsigned, or two's complement (8 bits).
fn q_bytes(v: u32) -> vec4<f32> {
    if (Q_BITS == 8u) {
        let s = bitcast<vec4<i32>>(vec4<u32>(v << 24u, v << 16u, v << 8u, v)) >> vec4<u32>(24u);
        return vec4<f32>(s);
    }
    return vec4<f32>(vec4<u32>(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u));
}
fn q_low(v: u32) -> vec4<f32> { return q_bytes(v & 0x0f0f0f0fu); }
fn q_high(v: u32) -> vec4<f32> { return q_bytes((v >> 4u) & 0x0f0f0f0fu); }

// Values e .. e + 3 of row `row` (e a multiple of 4): the word holding them and its scale.
fn w4(row: u32, e: u32) -> vec4<f32> {
    let blk = row * (node.k / QK) + e / QK;
    let j = e % QK;
    let s = q_scale(blk);
    var q: vec4<f32>;
    if (Q_BITS == 8u) {
        q = q_bytes(qword(blk * 8u + j / 4u));
    } else {
        let v = qword(blk * 4u + (j % 16u) / 4u);
        q = select(q_low(v), q_high(v), j >= 16u);
    }
    return q * s.x + s.y;
}

// Element i of the chunk (row-major, rows of node.k).
fn ws(i: u32) -> f32 {
    let e = i % node.k;
    return w4(i / node.k, e & ~3u)[e & 3u];
}

// Block `blk`'s dot product with the 32 values x0 .. x7 (vec4s in order), whose sum is
// xsum: d * sum(q x) + c * sum(x), one multiply by the scale per block.
fn q_block_dot(blk: u32, x0: vec4<f32>, x1: vec4<f32>, x2v: vec4<f32>, x3: vec4<f32>,
               x4v: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>, xsum: f32) -> f32 {
    let s = q_scale(blk);
    var d: f32;
    if (Q_BITS == 8u) {
        let a = w[2u * blk];
        let b = w[2u * blk + 1u];
        d = dot(q_bytes(a.x), x0) + dot(q_bytes(a.y), x1) + dot(q_bytes(a.z), x2v) + dot(q_bytes(a.w), x3)
          + dot(q_bytes(b.x), x4v) + dot(q_bytes(b.y), x5) + dot(q_bytes(b.z), x6) + dot(q_bytes(b.w), x7);
    } else {
        let q = w[blk];
        d = dot(q_low(q.x), x0) + dot(q_low(q.y), x1) + dot(q_low(q.z), x2v) + dot(q_low(q.w), x3)
          + dot(q_high(q.x), x4v) + dot(q_high(q.y), x5) + dot(q_high(q.z), x6) + dot(q_high(q.w), x7);
    }
    return s.x * d + s.y * xsum;
}
