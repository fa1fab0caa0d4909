// Sum over the 32 lanes of a lane group (threads 32g .. 32g + 31), returned to every lane.
// Chosen where every subgroup has the same SUBGROUP lanes, fewer than a lane group's 32
// (lavapipe: 8): a butterfly of shuffles inside each subgroup, then the lane group's
// 32 / SUBGROUP subgroup sums meet in workgroup memory (two barriers). Call from uniform
// control flow.
var<workgroup> lane_red: array<vec4<f32>, 256>;

fn lanes_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
    var s = v;
    for (var o = SUBGROUP / 2u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    lane_red[t] = s;
    workgroupBarrier();
    let base = t - t % 32u;
    var total = vec4<f32>(0.0);
    for (var l = 0u; l < 32u; l += SUBGROUP) {
        total += lane_red[base + l];
    }
    workgroupBarrier(); // the next call overwrites lane_red
    return total;
}
