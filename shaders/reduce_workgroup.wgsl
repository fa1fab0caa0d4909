// Sum over the 32 lanes of a lane group (threads 32g .. 32g + 31), returned to every lane.
// For devices without subgroups, or with subgroups narrower than a lane group (lavapipe: 8):
// a tree in workgroup memory. Call from uniform control flow (it holds barriers).
var<workgroup> lane_red: array<vec4<f32>, 128>;

fn lanes_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
    lane_red[t] = v;
    workgroupBarrier();
    for (var s = 16u; s > 0u; s >>= 1u) {
        if (t % 32u < s) {
            lane_red[t] += lane_red[t + s];
        }
        workgroupBarrier();
    }
    let total = lane_red[t - t % 32u];
    workgroupBarrier(); // the next call overwrites lane_red
    return total;
}
