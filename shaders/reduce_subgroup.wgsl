// Sums over lane groups of `width` lanes (a power of two up to 32; lanes t - t % width ..),
// returned to every lane of the group. Chosen when every subgroup holds at least 32 lanes
// (NVIDIA 32, AMD 32/64): a butterfly of shuffles stays inside the lane group, with no
// workgroup memory and no barrier. Call with a workgroup-uniform width.
fn group_sum4(v: vec4<f32>, t: u32, width: u32) -> vec4<f32> {
    var s = v;
    for (var o = width / 2u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}

// Sum over the 32 lanes of a lane group (threads 32g .. 32g + 31).
fn lanes_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
    return group_sum4(v, t, 32u);
}
