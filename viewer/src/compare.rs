//! Two runs side by side (e.g. a wgpu trace and a CPU trace, or two devices): node by node,
//! the variant each ran and its device time, with the nodes whose variant differs marked.

use eframe::egui::{self, Color32, RichText};
use fdpp_runtime::check::report::CheckReport;

use crate::document::ShownStep;

/// The other document of a comparison.
pub struct Comparison {
    pub name: String,
    pub steps: Vec<ShownStep>,
}

/// One node in both steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub node: String,
    pub left: Option<String>,
    pub right: Option<String>,
    pub left_micros: Option<f64>,
    pub right_micros: Option<f64>,
}

impl Row {
    pub fn differs(&self) -> bool {
        self.left != self.right
    }
}

/// Every node of either step, in the left step's order (nodes only the right has last).
pub fn rows(left: &ShownStep, right: &ShownStep) -> Vec<Row> {
    let variant = |s: &ShownStep, name: &str| s.node(name).map(|n| n.implementation().to_string());
    let micros = |s: &ShownStep, name: &str| s.node(name).and_then(|n| n.micros);
    let names = left.nodes.iter().chain(right.nodes.iter().filter(|n| left.node(&n.node).is_none())).map(|n| n.node.as_str());
    names
        .map(|name| Row {
            node: name.to_string(),
            left: variant(left, name),
            right: variant(right, name),
            left_micros: micros(left, name),
            right_micros: micros(right, name),
        })
        .collect()
}

pub fn show(ui: &mut egui::Ui, left_name: &str, left: &ShownStep, other: &Comparison, step: usize) {
    let Some(right) = other.steps.get(step).or(other.steps.last()) else {
        ui.label(format!("{} has no steps with node records", other.name));
        return;
    };
    let rows = rows(left, right);
    let differing = rows.iter().filter(|r| r.differs()).count();
    ui.label(format!("left: {left_name}: {}", left.title));
    ui.label(format!("right: {}: {}", other.name, right.title));
    ui.label(format!("{differing} of {} nodes run a different variant", rows.len()));
    let us = |v: Option<f64>| v.map_or("-".to_string(), |t| format!("{t:.1}"));
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("compare").striped(true).show(ui, |ui| {
            for h in ["node", "left variant", "right variant", "left us", "right us"] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for r in &rows {
                let color = if r.differs() { Color32::from_rgb(229, 57, 53) } else { ui.visuals().text_color() };
                ui.label(RichText::new(&r.node).color(color));
                ui.label(RichText::new(r.left.as_deref().unwrap_or("(absent)")).color(color));
                ui.label(RichText::new(r.right.as_deref().unwrap_or("(absent)")).color(color));
                ui.label(us(r.left_micros));
                ui.label(us(r.right_micros));
                ui.end_row();
            }
        });
    });
}

/// A `fdpp check --json` report: per backend against the reference, whether it passed, the
/// first divergence with what each side ran there, and every compared point of the step
/// it is in (or the first step), beyond-tolerance points in red.
pub fn show_check(ui: &mut egui::Ui, report: &CheckReport) {
    let red = Color32::from_rgb(229, 57, 53);
    let reference = report.backends.first().map_or("?".to_string(), |b| b.device.clone());
    ui.label(format!(
        "{}: {} decode steps after a {}-token prompt; reference {reference}",
        report.model,
        report.decode_steps,
        report.prompt.len()
    ));
    if let Some(inj) = &report.injected {
        ui.label(RichText::new(format!("perturbed on purpose: {inj}")).color(red));
    }
    egui::ScrollArea::vertical().show(ui, |ui| {
        for (ci, c) in report.comparisons.iter().enumerate() {
            let checked = report.backends.get(c.checked).map_or("?".to_string(), |b| b.device.clone());
            let verdict = if c.passed() { "within tolerance".to_string() } else { "DISAGREES".to_string() };
            ui.heading(format!("{checked}: {verdict}"));
            let step = match &c.first_divergence {
                Some(d) => {
                    let ran = |r: &Option<fdpp_runtime::check::report::Ran>| r.as_ref().map_or("-".to_string(), |r| r.to_string());
                    ui.label(
                        RichText::new(format!(
                            "first divergence: step {}, node {}: reference ran {}, this backend ran {}",
                            d.step,
                            d.node,
                            ran(&d.reference),
                            ran(&d.checked)
                        ))
                        .color(red),
                    );
                    d.step
                }
                None => 0,
            };
            ui.label(format!("greedy ids: reference {:?}, this backend {:?}", c.reference_ids, c.checked_ids));
            let Some(s) = c.steps.get(step) else { continue };
            egui::CollapsingHeader::new(format!("step {step} ({:?}): {} compared points", s.phase, s.points.len()))
                .id_salt(("check", ci))
                .default_open(c.first_divergence.is_some())
                .show(ui, |ui| {
                    egui::Grid::new(("check-points", ci)).striped(true).show(ui, |ui| {
                        for h in ["node", "kind", "reference ran", "this backend ran", "max rel", "1 - cos"] {
                            ui.label(RichText::new(h).strong());
                        }
                        ui.end_row();
                        for p in &s.points {
                            let color = if p.within { ui.visuals().text_color() } else { red };
                            let ran =
                                |r: &[fdpp_runtime::check::report::Ran]| r.iter().map(|r| r.variant.label()).collect::<Vec<_>>().join(", ");
                            let (rel, cos) = p.metrics.errors.as_ref().map_or(("non-finite".into(), "-".into()), |e| {
                                (format!("{:.1e}", e.rel), format!("{:.1e}", e.cos_distance))
                            });
                            ui.label(RichText::new(&p.node).color(color));
                            ui.label(&p.kind);
                            ui.label(ran(&p.reference));
                            ui.label(ran(&p.checked));
                            ui.label(RichText::new(rel).color(color));
                            ui.label(RichText::new(cos).color(color));
                            ui.end_row();
                        }
                    });
                });
        }
    });
}
