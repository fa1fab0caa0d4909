// Sum over the 32 lanes of a lane group (threads 32g .. 32g + 31), returned to every lane.
// Chosen when every subgroup holds at least 32 lanes (NVIDIA 32, AMD 32/64): a butterfly of
// shuffles stays inside the lane group, with no workgroup memory and no barrier.
fn lanes_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
    var s = v;
    for (var o = 16u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}
