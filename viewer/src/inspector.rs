//! One node in detail: op, shapes, type, bytes moved, the variant and its parameters, the
//! reason the lowering gave (thresholds and the table's source), and its device time and
//! share of the step where it was measured.

use eframe::egui::{self, RichText};
use fdpp_runtime::trace::{How, NodeRecord, Reason};

use crate::document::ShownStep;
use crate::palette::Category;

/// What the node's launch reads and writes: its weight, its inputs and output (f32).
pub fn bytes_moved(n: &NodeRecord) -> usize {
    let elems = |s: &Vec<usize>| s.iter().product::<usize>();
    n.weight_bytes + 4 * (n.inputs.iter().map(elems).sum::<usize>() + elems(&n.output))
}

/// The inspector's lines (also what the UI tests read).
pub fn lines(n: &NodeRecord, step: &ShownStep) -> Vec<String> {
    let mut out = vec![format!("node: {}", n.node), format!("op: {}", n.op)];
    out.push(format!("inputs: {:?} -> output: {:?}", n.inputs, n.output));
    if let Some(dt) = n.dtype {
        out.push(format!("weight: {dt}, {:.2} MB", n.weight_bytes as f64 / 1e6));
    }
    out.push(format!("bytes moved: {:.2} MB", bytes_moved(n) as f64 / 1e6));
    match &n.how {
        How::Launch { variant, params, launches, absorbs } => {
            out.push(format!("variant: {variant}"));
            out.push(format!("parameters: {params:?}"));
            if *launches > 1 {
                out.push(format!("launches: {launches} (one per weight chunk)"));
            }
            if !absorbs.is_empty() {
                out.push(format!("absorbs: {}", absorbs.join(", ")));
            }
        }
        How::Fused { into, stage } => out.push(format!("variant: fused into {into} ({stage})")),
    }
    out.push(format!("reason: {}", n.reason));
    if let Reason::Dataflow { inflections, source, .. } = &n.reason {
        out.push(format!("thresholds: M1 = {}, M2 = {} ({source})", inflections.m1, inflections.m2));
    }
    match (n.micros, step.node_micros()) {
        (Some(us), Some(total)) if total > 0.0 => out.push(format!("device time: {us:.2} us ({:.1}% of the step)", 100.0 * us / total)),
        (Some(us), _) => out.push(format!("device time: {us:.2} us")),
        (None, _) => out.push("device time: not measured (open a trace made with --profile)".into()),
    }
    out
}

pub fn show(ui: &mut egui::Ui, step: &ShownStep, selected: Option<&str>) {
    ui.heading("Node");
    let Some(name) = selected else {
        ui.label("Select a node in the graph or search for one.");
        return;
    };
    let Some(n) = step.node(name) else {
        ui.label(format!("{name} is not in this step."));
        return;
    };
    let c = Category::of(n, step.fallback_rows);
    ui.horizontal(|ui| {
        crate::palette::swatch(ui, c.color());
        ui.label(RichText::new(c.label()).strong());
    });
    for line in lines(n, step) {
        ui.add(egui::Label::new(line).wrap());
    }
}
