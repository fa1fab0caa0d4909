//! The graph: nodes in execution order, grouped by layer (collapsible), coloured by what
//! they run, on a canvas that pans (drag) and zooms (ctrl + scroll); a search box that
//! finds nodes by name; the legend.

use eframe::egui::{self, Button, CollapsingHeader, Rect, RichText, Scene, Stroke};

use crate::document::ShownStep;
use crate::palette::Category;

/// Matches listed under the search box at most.
const MAX_MATCHES: usize = 12;

pub struct GraphView {
    pub scene_rect: Rect,
    pub search: String,
}

impl Default for GraphView {
    fn default() -> Self {
        // Set to the canvas's size (zoom 1) on the first frame.
        GraphView { scene_rect: Rect::ZERO, search: String::new() }
    }
}

/// The layer a node belongs to (`layers.3.attn.qkv` -> `layer 3`), and its name inside it.
pub fn group_of(node: &str) -> (String, &str) {
    if let Some(rest) = node.strip_prefix("layers.")
        && let Some((layer, name)) = rest.split_once('.')
    {
        return (format!("layer {layer}"), name);
    }
    ("model".to_string(), node)
}

/// Consecutive nodes of one group, in execution order.
fn groups(step: &ShownStep) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = vec![];
    for (i, n) in step.nodes.iter().enumerate() {
        let (g, _) = group_of(&n.node);
        match out.last_mut() {
            Some((last, members)) if *last == g => members.push(i),
            _ => out.push((g, vec![i])),
        }
    }
    out
}

pub fn legend(ui: &mut egui::Ui, step: &ShownStep) {
    ui.horizontal_wrapped(|ui| {
        for c in Category::ALL {
            let count = step.nodes.iter().filter(|n| Category::of(n, step.fallback_rows) == c).count();
            if count == 0 && matches!(c, Category::SplitKvFallback | Category::TwoPass | Category::Flash) {
                continue;
            }
            crate::palette::swatch(ui, c.color());
            ui.label(format!("{} ({count})", c.label()));
            ui.add_space(8.0);
        }
    });
}

impl GraphView {
    /// The search box and its matches; a click selects the node.
    pub fn search(&mut self, ui: &mut egui::Ui, step: &ShownStep, selected: &mut Option<String>) {
        ui.horizontal(|ui| {
            let label = ui.label("Search nodes:");
            ui.add(egui::TextEdit::singleline(&mut self.search).hint_text("e.g. layers.3.attn.qkv or down").desired_width(260.0))
                .labelled_by(label.id);
        });
        let query = self.search.trim();
        if query.is_empty() {
            return;
        }
        let matches: Vec<_> = step.nodes.iter().filter(|n| n.node.contains(query)).collect();
        ui.horizontal_wrapped(|ui| {
            if matches.is_empty() {
                ui.label(format!("no node matches \"{query}\""));
            }
            for n in matches.iter().take(MAX_MATCHES) {
                let c = Category::of(n, step.fallback_rows);
                if ui.add(Button::new(RichText::new(&n.node).color(egui::Color32::BLACK)).fill(c.color())).clicked() {
                    *selected = Some(n.node.clone());
                }
            }
            if matches.len() > MAX_MATCHES {
                ui.label(format!("and {} more", matches.len() - MAX_MATCHES));
            }
        });
    }

    /// The canvas of layers and nodes.
    pub fn canvas(&mut self, ui: &mut egui::Ui, step: &ShownStep, selected: &mut Option<String>) {
        egui::Frame::group(ui.style()).show(ui, |ui| {
            // Start at 1:1 on the first layers (fitting all of them makes the text unreadable).
            if self.scene_rect == Rect::ZERO {
                self.scene_rect = Rect::from_min_size(egui::Pos2::ZERO, ui.available_size());
            }
            Scene::new().zoom_range(0.2..=3.0).show(ui, &mut self.scene_rect, |ui| {
                ui.set_max_width(900.0);
                for (gi, (group, members)) in groups(step).into_iter().enumerate() {
                    let launches = members.iter().filter(|&&i| Category::of(&step.nodes[i], None) != Category::Fused).count();
                    let time: f64 = members.iter().filter_map(|&i| step.nodes[i].micros).sum();
                    let title = if time > 0.0 {
                        format!("{group}: {} nodes, {launches} run, {time:.1} us", members.len())
                    } else {
                        format!("{group}: {} nodes, {launches} run", members.len())
                    };
                    CollapsingHeader::new(title).id_salt(("group", gi)).default_open(true).show(ui, |ui| {
                        ui.horizontal_wrapped(|ui| {
                            for &i in &members {
                                let n = &step.nodes[i];
                                let (_, short) = group_of(&n.node);
                                let c = Category::of(n, step.fallback_rows);
                                let is_sel = selected.as_deref() == Some(n.node.as_str());
                                let stroke = if is_sel { Stroke::new(3.0, ui.visuals().strong_text_color()) } else { Stroke::NONE };
                                let b = Button::new(RichText::new(short).color(egui::Color32::BLACK)).fill(c.color()).stroke(stroke);
                                let r = ui.add(b).on_hover_text(format!("{}: {}", n.node, n.implementation()));
                                if r.clicked() {
                                    *selected = Some(n.node.clone());
                                }
                            }
                        });
                    });
                }
            });
        });
    }
}
