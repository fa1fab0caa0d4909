// Block-quantized weights (ggml's Q8_0, Q4_0, Q4_1: blocks of 32 values along a row), read
// as the file stores them and dequantized as they are loaded. The loader prepends the
// type's constants:
//   Q_BITS    4 or 8 bits a value
//   Q_WORDS   u32 words of one block's values (4 or 8)
//   Q_MIN     the block carries a min m beside its scale d (Q4_1: x = d * q + m)
//   Q_OFFSET  else x = d * (q + Q_OFFSET) (Q4_0: -8; Q8_0: 0, q signed)
// The upload (runtime/backend/wgpu/weights.rs) moves each block's scale apart from its
// values, so values load as aligned words; the bits are the file's. A chunk of node.n rows
// of node.k values is, in u32 words:
//   [rows x blocks] x Q_WORDS: block (r, b) at (r * B + b) * Q_WORDS, B = K / 32;
//     4 bits: byte j holds value j (low nibble) and value j + 16 (high nibble), as in ggml;
//     8 bits: byte j holds value j;
//   then the scales: Q4_1 one u32 per block (d | m << 16, f16 each), the others one f16 d
//     per block, two per u32.

@group(0) @binding(5) var<storage, read> w: array<u32>;

const QK: u32 = 32u;

fn qword(i: u32) -> u32 { return w[i]; }

// (d, c) of block `blk` (r * B + b) of the chunk: a value is d * q + c.
fn q_scale(blk: u32) -> vec2<f32> {
    let base = node.n * (node.k / QK) * Q_WORDS;
    if (Q_MIN) { return unpack2x16float(qword(base + blk)); }
    let d = unpack2x16float(qword(base + blk / 2u))[blk & 1u];
    return vec2<f32>(d, Q_OFFSET * d);
}

// Four small integers as floats without integer-to-float conversions (a quarter of the
// FMA rate on NVIDIA): each goes into the low mantissa bits of 2^23 and 2^23 is subtracted,
// exactly. `bias` is 2^23 plus what the stored value is offset by.
fn q_magic(b: vec4<u32>, bias: f32) -> vec4<f32> {
    return bitcast<vec4<f32>>(b | vec4<u32>(0x4b000000u)) - bias;
}
// The four bytes of a word as two's complement values (8 bits): each byte's sign bit
// flipped makes it the value plus 128.
fn q_bytes(v: u32) -> vec4<f32> {
    let b = vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) & vec4<u32>(0xffu);
    return q_magic(b ^ vec4<u32>(0x80u), 8388736.0);
}
// The low and the high nibbles of a word's four bytes.
fn q_low(v: u32) -> vec4<f32> {
    return q_magic(vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) & vec4<u32>(0xfu), 8388608.0);
}
fn q_high(v: u32) -> vec4<f32> {
    return q_low(v >> 4u);
}

// Values e .. e + 3 of row `row` (e a multiple of 4): the word holding them and its scale.
fn w4(row: u32, e: u32) -> vec4<f32> {
    let blk = row * (node.k / QK) + e / QK;
    let j = e % QK;
    let s = q_scale(blk);
    var q: vec4<f32>;
    if (Q_BITS == 8u) {
        q = q_bytes(qword(blk * 8u + j / 4u));
    } else {
        // Values 16 .. 31 are the high nibbles of the words of 0 .. 15.
        q = q_low(qword(blk * 4u + (j % 16u) / 4u) >> (4u * (j / 16u)));
    }
    return q * s.x + s.y;
}

// Element i of the chunk (row-major, rows of node.k).
fn ws(i: u32) -> f32 {
    let e = i % node.k;
    return w4(i / node.k, e & ~3u)[e & 3u];
}

// The GEMV's unit of work is one word of a block's values (4 bits: 8 values, 8 bits: 4).
// The vec4s of an x row that unit u multiplies: its first four values, and (4 bits) the
// four in the high nibbles, 16 further on (8 bits: the same vec4 twice).
fn q_unit_x(u: u32) -> vec2<u32> {
    let b = 8u * (u / Q_WORDS);
    let i = u % Q_WORDS;
    if (Q_BITS == 8u) { return vec2<u32>(b + i, b + i); }
    return vec2<u32>(b + i, b + 4u + i);
}

// Unit u of the row whose first block is `row_blk` (row * K / 32) against the x values `lo`
// and `hi` of `q_unit_x` (8 bits: `hi` unused), whose sum is xsum: d * sum(q x) + c * sum(x).
fn q_unit_dot(row_blk: u32, u: u32, lo: vec4<f32>, hi: vec4<f32>, xsum: f32) -> f32 {
    let s = q_scale(row_blk + u / Q_WORDS);
    let v = qword(row_blk * Q_WORDS + u);
    if (Q_BITS == 8u) { return s.x * dot(q_bytes(v), lo) + s.y * xsum; }
    return s.x * (dot(q_low(v), lo) + dot(q_high(v), hi)) + s.y * xsum;
}
