// Memory bandwidth probes for `fdpp bench kernels` (not used by the model): the ceilings
// the linear and attention kernels are compared against. Both stream `node.n` vec4s of `x`
// with a grid-stride loop, so any grid covers any buffer; launch enough workgroups to fill
// the device (at most 65535).
//
// stream_read: the read ceiling (GEMV and decode attention are read-bound). Every thread
// keeps four independent 16-byte loads in flight; the workgroup writes one sum to
// y[workgroup], so the loads cannot be optimised away and the writes cost nothing.
// stream_copy: a copy done by shader invocations (read + write), beside the driver's
// copy_buffer_to_buffer, which some drivers run on a DMA engine slower than the SMs.

const BW_WG: u32 = 256u;

var<workgroup> bw_sum: array<vec4<f32>, 256>;

// grid: (groups, 1, 1); y holds at least `groups` floats.
@compute @workgroup_size(256)
fn stream_read(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let stride = nwg.x * BW_WG;
    let n = node.n;
    var acc = vec4<f32>(0.0);
    var i = wg.x * BW_WG + t;
    // (n - i) / stride > 3: four more elements of this thread exist (no u32 overflow).
    for (; i < n && (n - i - 1u) / stride >= 3u; i += 4u * stride) {
        let a = x[i];
        let b = x[i + stride];
        let c = x[i + 2u * stride];
        let d = x[i + 3u * stride];
        acc += (a + b) + (c + d);
    }
    for (; i < n; i += stride) {
        acc += x[i];
    }
    bw_sum[t] = acc;
    workgroupBarrier();
    for (var s = BW_WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) { bw_sum[t] += bw_sum[t + s]; }
        workgroupBarrier();
    }
    if (t == 0u) {
        let v = bw_sum[0];
        y[wg.x] = v.x + v.y + v.z + v.w;
    }
}

// grid: (groups, 1, 1); y holds 4 * node.n floats. y is a scalar array: the four stores of
// a vec4 land in the same 16 bytes and are merged in the cache before they reach memory.
@compute @workgroup_size(256)
fn stream_copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let stride = nwg.x * BW_WG;
    for (var i = wg.x * BW_WG + t; i < node.n; i += stride) {
        let v = x[i];
        let o = 4u * i;
        y[o] = v.x;
        y[o + 1u] = v.y;
        y[o + 2u] = v.z;
        y[o + 3u] = v.w;
    }
}
