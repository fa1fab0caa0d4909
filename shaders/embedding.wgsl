// The embedding table, compiled with the table's storage (float or block-quantized: ws
// dequantizes), as linear layers are.

// Rows of the embedding table picked by token id. A table split into chunks is gathered by
// one dispatch per chunk; each handles the tokens whose id falls in its rows.
@compute @workgroup_size(64)
fn embedding(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y;
    let j = gid.x;
    let H = node.k;
    if (i >= step.m || j >= H) { return; }
    let tok = token_at(i);
    if (tok < node.n_offset || tok >= node.n_offset + node.n) { return; }
    y[i * H + j] = ws((tok - node.n_offset) * H + j);
}
