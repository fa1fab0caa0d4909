//! fdpp-viewer: a desktop view of fdpp's lowered graph. It shows, for every node, the
//! dataflow (A GEMV / B flat GEMM / C GEMM) or attention kernel it runs, or the launch it is
//! fused into, and why; re-lowers live for any M and context; charts the A/B/C timings of
//! `fdpp bench kernels`; runs the engine; and compares two runs node by node.

pub mod app;
pub mod chart;
pub mod compare;
pub mod document;
pub mod graph_view;
pub mod inspector;
pub mod jobs;
pub mod live_plan;
pub mod palette;
