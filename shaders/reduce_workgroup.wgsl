// Sums over lane groups of `width` lanes (a power of two up to 32; lanes t - t % width ..),
// returned to every lane of the group. For devices without subgroups: through workgroup
// memory, with two barriers (a tree would take up to six, and barriers are what software
// rasterisers pay for most). Call from uniform control flow, with a workgroup-uniform width.
var<workgroup> lane_red: array<vec4<f32>, 256>;

fn group_sum4(v: vec4<f32>, t: u32, width: u32) -> vec4<f32> {
    lane_red[t] = v;
    workgroupBarrier();
    let base = t - t % width;
    var total = vec4<f32>(0.0);
    for (var l = 0u; l < width; l++) {
        total += lane_red[base + l];
    }
    workgroupBarrier(); // the next call overwrites lane_red
    return total;
}

// Sum over the 32 lanes of a lane group (threads 32g .. 32g + 31).
fn lanes_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
    return group_sum4(v, t, 32u);
}
