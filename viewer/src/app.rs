//! The viewer's window: what is open, the step shown (recorded in a file, or lowered here
//! for any M and context), and the tabs: graph + inspector, dataflow chart, run, compare.

use std::path::{Path, PathBuf};
use std::time::Instant;

use eframe::egui::{self, Color32, RichText};
use egui_plot::{Line, Plot};
use fdpp_runtime::check::report::CheckReport;
use fdpp_runtime::lower::caps::BackendCaps;
use fdpp_runtime::model::ModelConfig;
use fdpp_runtime::trace::OpTime;

use crate::compare::{self, Comparison};
use crate::document::{self, Document, ShownStep};
use crate::graph_view::{self, GraphView};
use crate::jobs::{self, BackendChoice, Job, JobEvent, RunRequest};
use crate::live_plan::{LivePlan, StepKind};
use crate::{chart, inspector};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tab {
    Graph,
    Chart,
    Run,
    Compare,
}

impl Tab {
    const ALL: [Tab; 4] = [Tab::Graph, Tab::Chart, Tab::Run, Tab::Compare];
    fn label(self) -> &'static str {
        match self {
            Tab::Graph => "Graph",
            Tab::Chart => "Dataflow chart",
            Tab::Run => "Run",
            Tab::Compare => "Compare",
        }
    }
}

/// Which step is shown.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StepChoice {
    /// One the open file recorded.
    Recorded(usize),
    /// Lowered here from the M and context controls.
    Live { kind: StepKind, m: usize, ctx: usize },
}

/// A message under the toolbar: what was opened, or what went wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub error: bool,
    pub text: String,
}

struct RunPanel {
    prompt: String,
    max_tokens: usize,
    profile: bool,
    text: String,
    /// Milliseconds between streamed pieces of text (about one per token).
    latencies: Vec<f64>,
    last_piece: Option<Instant>,
    summary: String,
    op_summary: Vec<OpTime>,
}

impl Default for RunPanel {
    fn default() -> Self {
        RunPanel {
            prompt: "The capital of France is".into(),
            max_tokens: 32,
            profile: true,
            text: String::new(),
            latencies: vec![],
            last_piece: None,
            summary: String::new(),
            op_summary: vec![],
        }
    }
}

/// Frames drawn before a screenshot is taken (layout and fonts settle), and the file.
struct Screenshot {
    path: PathBuf,
    frames: u32,
    requested: bool,
}

pub struct ViewerApp {
    pub title: String,
    recorded: Vec<ShownStep>,
    live: Option<LivePlan>,
    choice: StepChoice,
    current: Option<(StepChoice, ShownStep)>,
    pub selected: Option<String>,
    graph: GraphView,
    pub open_path: String,
    pub compare_path: String,
    pub message: Option<Message>,
    curves: Option<chart::Curves>,
    comparison: Option<Comparison>,
    check: Option<CheckReport>,
    pub tab: Tab,
    run: RunPanel,
    pub model: Option<PathBuf>,
    pub backend: BackendChoice,
    job: Option<Job>,
    status: String,
    screenshot: Option<Screenshot>,
}

impl Default for ViewerApp {
    fn default() -> Self {
        ViewerApp {
            title: "nothing open".into(),
            recorded: vec![],
            live: None,
            choice: StepChoice::Live { kind: StepKind::Decode, m: 1, ctx: 512 },
            current: None,
            selected: None,
            graph: GraphView::default(),
            open_path: String::new(),
            compare_path: String::new(),
            message: None,
            curves: None,
            comparison: None,
            check: None,
            tab: Tab::Graph,
            run: RunPanel::default(),
            model: None,
            backend: BackendChoice::Auto,
            job: None,
            status: String::new(),
            screenshot: None,
        }
    }
}

impl ViewerApp {
    fn say(&mut self, error: bool, text: String) {
        self.message = Some(Message { error, text });
    }

    /// Opens a plan, trace, bench or kernels file; an unreadable one leaves a message.
    pub fn open_file(&mut self, path: &Path) {
        match document::open(path) {
            Ok(Document::Kernels(k)) => {
                self.say(false, format!("opened kernel timings of {} ({} linear timings)", k.device, k.linear.len()));
                self.curves = Some(chart::Curves::of_report(k));
                self.tab = Tab::Chart;
            }
            Ok(Document::Profile(p)) => {
                self.say(false, format!("opened the tuned profile of {} ({} shapes)", p.key.device, p.table.shapes.len()));
                self.curves = Some(chart::Curves::of_profile(*p));
                self.tab = Tab::Chart;
            }
            Ok(Document::Check(c)) => {
                let verdict = if c.passed() { "every backend within tolerance" } else { "a backend disagrees" };
                self.say(false, format!("opened check report {}: {verdict}", path.display()));
                self.check = Some(c);
                self.tab = Tab::Compare;
            }
            Ok(doc) => {
                self.say(false, format!("opened {} {}", doc.kind(), path.display()));
                self.set_document(&doc);
            }
            Err(e) => self.say(true, format!("error: {e}")),
        }
    }

    fn set_document(&mut self, doc: &Document) {
        self.title = doc.model();
        self.recorded = doc.steps();
        self.live = None;
        if let Some((config, caps)) = doc.lowering_inputs() {
            self.set_live(config, caps);
        }
        // The last recorded step: a trace's decode step, where the fusions show.
        self.choice = if self.recorded.is_empty() { self.live_choice() } else { StepChoice::Recorded(self.recorded.len() - 1) };
        self.current = None;
    }

    fn set_live(&mut self, config: ModelConfig, caps: BackendCaps) {
        match LivePlan::new(config, caps) {
            Ok(p) => self.live = Some(p),
            Err(e) => self.say(true, format!("error: cannot lower this model: {e}")),
        }
    }

    fn live_choice(&self) -> StepChoice {
        match self.choice {
            c @ StepChoice::Live { .. } => c,
            StepChoice::Recorded(_) => StepChoice::Live { kind: StepKind::Decode, m: 1, ctx: 512 },
        }
    }

    /// A model (or the default one) on a backend: its plan, lowered live (in the background).
    pub fn open_model(&mut self, ctx: &egui::Context, path: Option<PathBuf>, backend: BackendChoice) {
        self.model = path.clone();
        self.backend = backend;
        self.job = Some(jobs::plan_model(ctx, path, backend));
    }

    pub fn open_comparison(&mut self, path: &Path) {
        match document::open(path) {
            Ok(doc) => {
                let steps = doc.steps();
                if steps.is_empty() {
                    self.say(true, format!("error: {} has no node records to compare", doc.kind()));
                    return;
                }
                self.comparison = Some(Comparison { name: format!("{} ({})", doc.model(), path.display()), steps });
                self.tab = Tab::Compare;
                self.say(false, format!("comparing with {}", path.display()));
            }
            Err(e) => self.say(true, format!("error: {e}")),
        }
    }

    /// Lowers the shown step again when the controls changed since it was made.
    fn refresh_current(&mut self) {
        if self.current.as_ref().is_none_or(|(c, _)| *c != self.choice) {
            let step = match self.choice {
                StepChoice::Recorded(i) => self.recorded.get(i).cloned(),
                StepChoice::Live { kind, m, ctx } => self.live.as_ref().map(|p| p.step(kind, m, ctx)),
            };
            self.current = step.map(|s| (self.choice, s));
        }
    }

    pub fn request_screenshot(&mut self, path: PathBuf) {
        self.screenshot = Some(Screenshot { path, frames: 0, requested: false });
    }

    fn poll_job(&mut self) {
        let Some(job) = &self.job else { return };
        let mut done = false;
        let events: Vec<JobEvent> = job.rx.try_iter().collect();
        let what = job.what.clone();
        for e in events {
            match e {
                JobEvent::Status(s) => self.status = s,
                JobEvent::Text(piece) => {
                    let now = Instant::now();
                    if let Some(last) = self.run.last_piece {
                        self.run.latencies.push((now - last).as_secs_f64() * 1e3);
                    }
                    self.run.last_piece = Some(now);
                    self.run.text.push_str(&piece);
                }
                JobEvent::Planned(p) => {
                    let jobs::Planned { model, config, caps, note } = *p;
                    self.title = format!("{model} on {} ({})", caps.backend, caps.device);
                    self.recorded.clear();
                    self.set_live(config, caps);
                    self.choice = self.live_choice();
                    self.current = None;
                    match note {
                        Some(n) => self.say(false, n),
                        None => self.say(false, format!("planned {}", self.title)),
                    }
                    done = true;
                }
                JobEvent::Generated { output, trace } => {
                    let s = &output.stats;
                    self.run.summary = format!(
                        "{}: prefill {} tokens at {:.1} tok/s, decode {} tokens at {:.1} tok/s, stopped: {:?}",
                        s.backend,
                        s.prompt_tokens,
                        s.prefill_tok_s(),
                        s.decode_steps,
                        s.decode_tok_s(),
                        output.stop
                    );
                    self.run.op_summary = trace.op_summary.last().cloned().unwrap_or_default();
                    let doc = Document::Trace(*trace);
                    self.set_document(&doc);
                    self.say(false, "generated; the graph shows the run's last prefill and decode steps".into());
                    done = true;
                }
                JobEvent::Failed(e) => {
                    self.say(true, format!("error while {what}: {e}"));
                    done = true;
                }
            }
        }
        if done {
            self.job = None;
            self.status.clear();
        }
    }

    fn toolbar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("File:");
            ui.add(
                egui::TextEdit::singleline(&mut self.open_path)
                    .hint_text("plan / trace / bench / kernels / check / profile JSON")
                    .desired_width(320.0),
            )
            .labelled_by(label.id);
            if ui.button("Open").clicked() {
                let p = PathBuf::from(self.open_path.trim());
                self.open_file(&p);
            }
            ui.separator();
            let label = ui.label("Compare with:");
            ui.add(egui::TextEdit::singleline(&mut self.compare_path).hint_text("a second plan or trace").desired_width(220.0))
                .labelled_by(label.id);
            if ui.button("Load").clicked() {
                let p = PathBuf::from(self.compare_path.trim());
                self.open_comparison(&p);
            }
            ui.separator();
            egui::ComboBox::from_label("backend").selected_text(self.backend.label()).show_ui(ui, |ui| {
                for b in BackendChoice::ALL {
                    ui.selectable_value(&mut self.backend, b, b.label());
                }
            });
            if ui
                .add_enabled(self.job.is_none(), egui::Button::new("Plan model"))
                .on_hover_text("the --model file, or the default model")
                .clicked()
            {
                let (ctx, model, backend) = (ui.ctx().clone(), self.model.clone(), self.backend);
                self.open_model(&ctx, model, backend);
            }
        });
        ui.horizontal(|ui| {
            ui.label(RichText::new(&self.title).strong());
            if let Some(job) = &self.job {
                ui.spinner();
                ui.label(format!("{}: {}", job.what, self.status));
            }
        });
        if let Some(m) = &self.message {
            let color = if m.error { Color32::from_rgb(229, 57, 53) } else { ui.visuals().weak_text_color() };
            ui.label(RichText::new(&m.text).color(color));
        }
        ui.horizontal(|ui| {
            for t in Tab::ALL {
                ui.selectable_value(&mut self.tab, t, t.label());
            }
        });
    }

    /// The step choice, and for live steps the M and context controls.
    fn step_controls(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let title = match self.choice {
                StepChoice::Recorded(i) => self.recorded.get(i).map_or(String::new(), |s| s.title.clone()),
                StepChoice::Live { .. } => "lowered here for M and context".into(),
            };
            egui::ComboBox::from_label("step").selected_text(title).width(420.0).show_ui(ui, |ui| {
                for (i, s) in self.recorded.iter().enumerate() {
                    ui.selectable_value(&mut self.choice, StepChoice::Recorded(i), &s.title);
                }
                if self.live.is_some() {
                    let live = self.live_choice();
                    ui.selectable_value(&mut self.choice, live, "lowered here for M and context");
                }
            });
        });
        let max_ctx = self.live.as_ref().map_or(4096, |p| p.max_context());
        if let (StepChoice::Live { mut kind, mut m, mut ctx }, Some(plan)) = (self.choice, &self.live) {
            ui.horizontal(|ui| {
                ui.radio_value(&mut kind, StepKind::Decode, "decode (M sequences)");
                ui.radio_value(&mut kind, StepKind::Prefill, "prefill (M tokens)");
                ui.add(egui::Slider::new(&mut m, 1..=4096).logarithmic(true).show_value(false).text("M (log scale)"));
                let label = ui.label("M");
                ui.add(egui::DragValue::new(&mut m).range(1..=4096)).labelled_by(label.id);
                ui.add(egui::Slider::new(&mut ctx, 0..=max_ctx).logarithmic(true).show_value(false).text("context (log scale)"));
                let label = ui.label("context");
                ui.add(egui::DragValue::new(&mut ctx).range(0..=max_ctx)).labelled_by(label.id);
                let t = &plan.caps().table;
                ui.label(format!(
                    "table {}: M1 = {}, M2 = {} (fallback; {} shapes listed)",
                    t.source,
                    t.fallback.m1,
                    t.fallback.m2,
                    t.shapes.len()
                ));
            });
            self.choice = StepChoice::Live { kind, m, ctx };
        }
    }

    /// Generates from `prompt` on the chosen model and backend (in the background).
    pub fn start_run(&mut self, ctx: &egui::Context, prompt: String) {
        self.run.prompt = prompt;
        self.run.text.clear();
        self.run.latencies.clear();
        self.run.last_piece = None;
        let req = RunRequest {
            model: self.model.clone(),
            backend: self.backend,
            prompt: self.run.prompt.clone(),
            max_tokens: self.run.max_tokens,
            profile: self.run.profile,
        };
        self.job = Some(jobs::generate(ctx, req));
    }

    fn run_tab(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("Prompt:");
            ui.add(egui::TextEdit::singleline(&mut self.run.prompt).desired_width(420.0)).labelled_by(label.id);
            ui.add(egui::DragValue::new(&mut self.run.max_tokens).range(1..=4096).prefix("max tokens "));
            ui.checkbox(&mut self.run.profile, "time every node");
            let model = self.model.as_ref().map_or("the default model".to_string(), |p| p.display().to_string());
            if ui.add_enabled(self.job.is_none(), egui::Button::new("Generate")).on_hover_text(format!("greedy, on {model}")).clicked() {
                let prompt = self.run.prompt.clone();
                self.start_run(ui.ctx(), prompt);
            }
        });
        ui.label(&self.run.summary);
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.set_min_height(60.0);
            ui.add(egui::Label::new(if self.run.text.is_empty() { "(generated text streams here)" } else { &self.run.text }).wrap());
        });
        ui.columns(2, |cols| {
            cols[0].label("time between streamed tokens (ms)");
            let pts: Vec<[f64; 2]> = self.run.latencies.iter().enumerate().map(|(i, &ms)| [i as f64 + 1.0, ms]).collect();
            Plot::new("latency").height(200.0).x_axis_label("token").y_axis_label("ms").show(&mut cols[0], |p| {
                p.line(Line::new("latency", pts));
            });
            cols[1].label("last decode step: device time per kind of node");
            egui::Grid::new("ops").striped(true).show(&mut cols[1], |ui| {
                for o in &self.run.op_summary {
                    ui.label(&o.op);
                    ui.label(&o.implementation);
                    ui.label(format!("{} nodes", o.nodes));
                    ui.label(o.micros.map_or("not timed".into(), |us| format!("{us:.1} us")));
                    ui.end_row();
                }
            });
        });
    }

    /// The whole window, inside `ui` (eframe's root, or a test harness).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.poll_job();
        let dropped: Vec<PathBuf> =
            ui.ctx().input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect());
        if let Some(p) = dropped.first() {
            self.open_path = p.display().to_string();
            self.open_file(p);
        }
        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar(ui));
        self.refresh_current();
        if let (Tab::Graph | Tab::Compare, Some((_, step))) = (self.tab, &self.current) {
            egui::Panel::right("inspector").default_size(360.0).show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| inspector::show(ui, step, self.selected.as_deref()));
            });
        }
        egui::CentralPanel::default().show(ui, |ui| match self.tab {
            Tab::Compare if self.check.is_some() && self.comparison.is_none() => {
                compare::show_check(ui, self.check.as_ref().expect("checked"));
            }
            Tab::Graph | Tab::Compare => {
                if self.recorded.is_empty() && self.live.is_none() {
                    ui.label("Open a plan (fdpp inspect --json), a trace (fdpp generate --trace), bench results (fdpp bench --json), kernel timings (fdpp bench kernels --json) or a check report (fdpp check --json): type its path above or drop the file here; or press \"Plan model\".");
                    return;
                }
                self.step_controls(ui);
                // Lowered again if the controls changed; borrowed, not copied, every frame.
                self.refresh_current();
                let Some((_, step)) = &self.current else { return };
                if self.tab == Tab::Compare {
                    match &self.comparison {
                        Some(c) => {
                            let i = if let StepChoice::Recorded(i) = self.choice { i } else { 0 };
                            compare::show(ui, &self.title, step, c, i);
                        }
                        None => {
                            ui.label("Load a second plan or trace (\"Compare with\") to see the two side by side.");
                        }
                    }
                    return;
                }
                graph_view::legend(ui, step);
                self.graph.search(ui, step, &mut self.selected);
                self.graph.canvas(ui, step, &mut self.selected);
            }
            Tab::Chart => {
                chart::show(ui, self.curves.as_ref(), self.live.as_ref().map(|p| &p.caps().table));
            }
            Tab::Run => self.run_tab(ui),
        });
    }

    /// Takes the requested screenshot once the window has settled (and no job runs), writes
    /// it, then closes the window.
    fn screenshot_step(&mut self, ctx: &egui::Context) {
        let Some(shot) = &mut self.screenshot else { return };
        shot.frames += 1;
        if !shot.requested && shot.frames > 10 && self.job.is_none() {
            shot.requested = true;
            let (path, ctx2) = (shot.path.clone(), ctx.clone());
            ctx.request_screenshot(move |image| {
                let [w, h] = image.size;
                let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                match image::save_buffer(&path, &bytes, w as u32, h as u32, image::ColorType::Rgba8) {
                    Ok(()) => eprintln!("fdpp-viewer: screenshot written to {}", path.display()),
                    Err(e) => eprintln!("fdpp-viewer: cannot write {}: {e}", path.display()),
                }
                ctx2.send_viewport_cmd(egui::ViewportCommand::Close);
            });
        }
        ctx.request_repaint();
    }
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.ui(ui);
        let ctx = ui.ctx().clone();
        self.screenshot_step(&ctx);
    }
}
