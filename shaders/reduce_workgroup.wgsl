// Sum over the 32 lanes of a lane group (threads 32g .. 32g + 31), returned to every lane.
// For devices without subgroups, or with subgroups narrower than a lane group (lavapipe: 8):
// through workgroup memory, with two barriers (a tree would take six, and barriers are what
// software rasterisers pay for most). Call from uniform control flow.
var<workgroup> lane_red: array<vec4<f32>, 256>;

fn lanes_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
    lane_red[t] = v;
    workgroupBarrier();
    let base = t - t % 32u;
    var total = vec4<f32>(0.0);
    for (var l = 0u; l < 32u; l++) {
        total += lane_red[base + l];
    }
    workgroupBarrier(); // the next call overwrites lane_red
    return total;
}
