//! Two runs side by side (e.g. a wgpu trace and a CPU trace, or two devices): node by node,
//! the variant each ran and its device time, with the nodes whose variant differs marked.

use eframe::egui::{self, Color32, RichText};

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
