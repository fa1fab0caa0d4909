//! `fdpp-viewer [FILE] [--model PATH] [--backend B] [--compare FILE] [--tab T] [--screenshot PNG]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use eframe::egui;
use fdpp_viewer::app::{Tab, ViewerApp};
use fdpp_viewer::jobs::BackendChoice;

#[derive(Parser)]
#[command(version, about = "fdpp's viewer: which dataflow and kernel variant every node picked, and why")]
struct Args {
    /// A plan (`fdpp inspect --json`), trace (`fdpp generate --trace`), bench results
    /// (`fdpp bench --json`), kernel timings (`fdpp bench kernels --json`), a check report
    /// (`fdpp check --json`) or a tuned profile (`fdpp tune --json`, or its file in the cache).
    file: Option<PathBuf>,
    /// The same, named (a trace or any of the above).
    #[arg(long, conflicts_with = "file")]
    trace: Option<PathBuf>,
    /// Kernel timings or a tuned profile for the dataflow chart, besides the file.
    #[arg(long)]
    kernels: Option<PathBuf>,
    /// Plan this model (GGUF file or Hugging Face folder) on `--backend`; with no file given,
    /// the default model (fetched into the cache on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// A second plan or trace to compare with.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// The tab shown first.
    #[arg(long, value_enum, default_value = "graph")]
    tab: Tab,
    /// Select this node (e.g. layers.0.attn.qkv).
    #[arg(long)]
    select: Option<String>,
    /// Generate from this prompt at start (the run tab; greedy, on --model and --backend).
    #[arg(long)]
    run: Option<String>,
    /// Write a PNG of the window once it has settled, then exit (for the README images).
    #[arg(long)]
    screenshot: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_inner_size([1400.0, 900.0]).with_title("fdpp viewer"),
        ..Default::default()
    };
    let result = eframe::run_native(
        "fdpp viewer",
        options,
        Box::new(move |cc| {
            let mut app = ViewerApp::default();
            let file = args.file.or(args.trace);
            if let Some(f) = &file {
                app.open_path = f.display().to_string();
                app.open_file(f);
            }
            if let Some(k) = &args.kernels {
                app.open_file(k);
            }
            app.backend = args.backend;
            app.model = args.model.clone();
            if let Some(prompt) = args.run {
                app.start_run(&cc.egui_ctx, prompt);
            } else if file.is_none() && args.kernels.is_none() {
                app.open_model(&cc.egui_ctx, args.model, args.backend);
            }
            if let Some(c) = &args.compare {
                app.compare_path = c.display().to_string();
                app.open_comparison(c);
            }
            app.tab = args.tab;
            app.selected = args.select;
            if let Some(p) = args.screenshot {
                app.request_screenshot(p);
            }
            Ok(Box::new(app))
        }),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fdpp-viewer: {e}");
            ExitCode::FAILURE
        }
    }
}
