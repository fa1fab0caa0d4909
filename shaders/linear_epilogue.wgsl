// The bias and residual epilogue of every linear kernel (linear.wgsl and the matrix ones).
// BIASED (set when the module is compiled, see shaders.rs): the kernels add bias[column] to
// the product before the epilogue. The source is compiled once without and once with it,
// so the plain kernels carry no bias code and their registers, and so their occupancy,
// stay what they were (a runtime flag, or a second entry point sharing a body function,
// cost the H200 8% at batch 8).
fn bias_of(col: u32) -> f32 {
    if (BIASED) { return bias[col]; }
    return 0.0;
}

// MODE_RESIDUAL: + x2, the residual stream.
fn epilogue(row: u32, col: u32, v: f32) -> f32 {
    let b = v + bias_of(col);
    if ((node.mode & MODE_RESIDUAL) != 0u) { return b + x2s(row * node.ldy + col); }
    return b;
}

// Product v of token row `row`, chunk column `col`, through the epilogue into y (nothing
// for rows past M or columns past the chunk's N).
fn store_y(row: u32, col: u32, M: u32, v: f32) {
    let c = node.n_offset + col;
    if (row < M && col < node.n) { y[row * node.ldy + c] = epilogue(row, c, v); }
}
