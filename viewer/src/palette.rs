//! Colours by what a node runs: the dataflow of a linear layer (A/B/C), the attention
//! kernel, fused into a neighbour, or an elementwise kernel. One place, used by the graph,
//! the legend and the comparison.

use eframe::egui::{self, Color32};
use fdpp_runtime::lower::kernel::Variant;
use fdpp_runtime::trace::{How, NodeRecord};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Gemv,
    FlatGemm,
    Gemm,
    SplitKv,
    /// Split-KV whose rows left the unified-max range in this step and were recomputed.
    SplitKvFallback,
    Online,
    Flash,
    TwoPass,
    Fused,
    Other,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::Gemv,
        Category::FlatGemm,
        Category::Gemm,
        Category::SplitKv,
        Category::SplitKvFallback,
        Category::Online,
        Category::Flash,
        Category::TwoPass,
        Category::Fused,
        Category::Other,
    ];

    /// What a node of a step with `fallback_rows` recomputed rows ran.
    pub fn of(node: &NodeRecord, fallback_rows: Option<u32>) -> Category {
        match &node.how {
            How::Fused { .. } => Category::Fused,
            How::Launch { variant, .. } => match variant {
                Variant::Gemv { .. } => Category::Gemv,
                Variant::FlatGemm { .. } => Category::FlatGemm,
                Variant::Gemm { .. } => Category::Gemm,
                Variant::SplitKvAttention { .. } if fallback_rows.unwrap_or(0) > 0 => Category::SplitKvFallback,
                Variant::SplitKvAttention { .. } => Category::SplitKv,
                Variant::OnlineAttention => Category::Online,
                Variant::FlashAttention { .. } => Category::Flash,
                Variant::TwoPassAttention => Category::TwoPass,
                _ => Category::Other,
            },
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Category::Gemv => "A: GEMV",
            Category::FlatGemm => "B: flat GEMM",
            Category::Gemm => "C: GEMM",
            Category::SplitKv => "attention: split-KV, unified max",
            Category::SplitKvFallback => "attention: unified max, fallback taken",
            Category::Online => "attention: synchronised (online softmax)",
            Category::Flash => "attention: flash (tensor cores)",
            Category::TwoPass => "attention: two-pass (CPU oracle)",
            Category::Fused => "fused into a neighbour",
            Category::Other => "elementwise / other",
        }
    }

    pub fn color(self) -> Color32 {
        match self {
            Category::Gemv => Color32::from_rgb(76, 175, 80),
            Category::FlatGemm => Color32::from_rgb(255, 152, 0),
            Category::Gemm => Color32::from_rgb(171, 71, 188),
            Category::SplitKv => Color32::from_rgb(33, 150, 243),
            Category::SplitKvFallback => Color32::from_rgb(229, 57, 53),
            Category::Online => Color32::from_rgb(0, 150, 136),
            Category::Flash => Color32::from_rgb(253, 216, 53),
            Category::TwoPass => Color32::from_rgb(121, 134, 203),
            Category::Fused => Color32::from_rgb(120, 120, 120),
            Category::Other => Color32::from_rgb(189, 189, 189),
        }
    }
}

/// A small square of `color`, drawn (no glyph needed).
pub fn swatch(ui: &mut egui::Ui, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter().rect_filled(rect, 2.0, color);
}
