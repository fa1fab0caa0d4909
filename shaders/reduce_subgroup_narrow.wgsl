// Sums over lane groups of `width` lanes (a power of two up to 32; lanes t - t % width ..),
// returned to every lane of the group. Chosen where every subgroup has the same SUBGROUP
// lanes, fewer than 32 (lavapipe: 8): a butterfly of shuffles inside each subgroup; a group
// wider than a subgroup then meets its width / SUBGROUP subgroup sums in workgroup memory
// (two barriers). Call from uniform control flow, with a workgroup-uniform width.
var<workgroup> lane_red: array<vec4<f32>, 256>;

fn group_sum4(v: vec4<f32>, t: u32, width: u32) -> vec4<f32> {
    var s = v;
    for (var o = min(width, SUBGROUP) / 2u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    if (width <= SUBGROUP) {
        return s;
    }
    lane_red[t] = s;
    workgroupBarrier();
    let base = t - t % width;
    var total = vec4<f32>(0.0);
    for (var l = 0u; l < width; l += SUBGROUP) {
        total += lane_red[base + l];
    }
    workgroupBarrier(); // the next call overwrites lane_red
    return total;
}

// Sum over the 32 lanes of a lane group (threads 32g .. 32g + 31).
fn lanes_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
    return group_sum4(v, t, 32u);
}
