//! `fdpp inspect`: a backend's plan of a model, node by node, for steps of the sizes asked
//! for: which kernel variant each node runs with which parameters (or which launch absorbs
//! it), and why. Needs no weights, and with `--offline` no device either.

use std::path::PathBuf;

use fdpp_runtime::backend::{self, BackendCaps};
use fdpp_runtime::graph;
use fdpp_runtime::lower::{Lowering, LoweringOptions, TableChoice};
use fdpp_runtime::model::Model;
use fdpp_runtime::trace::{How, PlanFile, PlannedStep, StepShape};
use fdpp_runtime::{Error, Result};

use crate::DeviceArgs;
use crate::shape::Shape;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Model file or folder (only its header and config are read); the default model when
    /// neither this nor --shape is given.
    model: Option<PathBuf>,
    /// A known model's shapes instead of a file.
    #[arg(long, value_enum, conflicts_with = "model")]
    shape: Option<Shape>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Plan with the backend's built-in profile instead of its device's capabilities (also
    /// used, with a notice, when the device cannot be opened here).
    #[arg(long)]
    offline: bool,
    /// Tokens per step (comma-separated list): decode steps of that many sequences, or with
    /// --prefill one sequence's prompt of that many tokens.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    m: Vec<usize>,
    /// Keys the longest row attends to (its KV length) in every planned step.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Plan prefill steps instead of decode steps.
    #[arg(long)]
    prefill: bool,
    /// Also write the plan as JSON (typed node records per step, fusions, memory plan,
    /// capabilities) to this file, for the viewer and `fdpp check`.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: InspectArgs) -> Result<()> {
    if args.m.contains(&0) {
        return Err(Error::InvalidArgument("--m values must be at least 1".into()));
    }
    let (config, model, loaded): (fdpp_runtime::model::ModelConfig, String, Option<Model>) = match args.shape {
        Some(shape) => (shape.config(), format!("{} shapes", shape.name()), None),
        None => {
            let m = Model::load(crate::resolve_model(args.model.as_deref())?)?;
            (m.config.clone(), m.describe(), Some(m))
        }
    };
    let opts = args.device.backend()?;
    let builtin = || {
        BackendCaps::builtin(opts.kind()).ok_or_else(|| Error::BackendUnavailable {
            backend: opts.kind().name().into(),
            reason: "it has no built-in profile to plan with".into(),
        })
    };
    let caps = if args.offline {
        builtin()?
    } else {
        match backend::open(&opts) {
            Ok(device) => device.caps().clone(),
            // No device here: the plan is still useful with the backend's own profile.
            Err(Error::BackendUnavailable { backend, reason }) if BackendCaps::builtin(opts.kind()).is_some() => {
                eprintln!("fdpp: {backend} is not available here ({reason}); planning with its built-in profile");
                builtin()?
            }
            Err(e) => return Err(e),
        }
    };
    let config_notes = config.notes.clone();
    // The device's tuned profile, as generate and bench would use it.
    let mut table = TableChoice::BuiltIn;
    if !args.offline && !args.device.builtin_table {
        let (tuned, note) = fdpp_runtime::tune::profile::tuned_table(&caps);
        if let Some(note) = note {
            eprintln!("fdpp: note: {note}");
        }
        table = tuned.map_or(TableChoice::BuiltIn, TableChoice::Given);
    }
    let tuned = matches!(table, TableChoice::Given(_));
    let mut opts = LoweringOptions { table, ..Default::default() };
    // The model's stored calibration of phi, as generate would use it (a file's model only:
    // --shape has no weights to identify it by).
    if let Some(m) = &loaded {
        let (calibrated, note) = fdpp_runtime::calibrate::store::apply(&m.config, m.weights.as_ref(), &opts);
        if let Some(note) = note {
            eprintln!("fdpp: note: {note}");
        }
        opts = calibrated;
    }
    let graph = graph::llama::build(&config);
    // Which weights stay in their file's quantized type (`--weights native`), as generate
    // would store them: the file's types are in its header.
    if let Some(m) = &loaded {
        opts.file_types = graph.check_weights(m.weights.as_ref())?;
    }
    let lowering = Lowering::new(graph, caps, &opts)?;
    let caps = &lowering.caps;
    println!("model:   {model}");
    for note in &config_notes {
        println!("note:    {note}");
    }
    println!(
        "backend: {} ({}), weights {}, KV {}, largest binding {} MiB, subgroups {}, table: {}",
        caps.backend,
        caps.device,
        caps.weight_dtype,
        caps.kv_dtype,
        caps.max_binding_bytes >> 20,
        caps.subgroup_size.map_or("none".into(), |s| format!("{s} lanes")),
        caps.table.source
    );
    println!("{}", crate::weights_summary(&lowering));
    if tuned {
        crate::tune::print_table(&caps.table);
    }
    let g = &lowering.graph;
    println!(
        "graph:   {} nodes, {} launch templates, {} fusions; memory plan: {} buffers, {} floats per token",
        g.nodes.len(),
        lowering.templates.len(),
        lowering.fusions.len(),
        lowering.memory.widths.len(),
        lowering.memory.buffer_elements(&g.tensors, 1, 1).iter().sum::<usize>()
    );
    let mut steps = Vec::new();
    for &m in &args.m {
        let shape = if args.prefill {
            StepShape { m, out: 1, sequences: 1, max_keys: args.ctx.max(m) }
        } else {
            StepShape { m, out: m, sequences: m, max_keys: args.ctx.max(1) }
        };
        let step = lowering.lower(&shape);
        let nodes = lowering.records(&step, None);
        let kind = if shape.is_decode() { format!("decode, {m} sequence(s)") } else { format!("prefill of {m} tokens") };
        println!("\nstep m={m} ({kind}, up to {} keys): {} launches", shape.max_keys, step.launches.len());
        println!("{:>4}  {:<26} {:<12} {:<14} {:>10}  {:<44} reason", "#", "node", "op", "output", "weight MB", "variant");
        for (i, r) in nodes.iter().enumerate() {
            let what = match &r.how {
                How::Launch { variant, launches, .. } if *launches > 1 => format!("{variant} x{launches}"),
                How::Launch { variant, .. } => variant.to_string(),
                How::Fused { into, stage } => format!("fused into {into} ({stage})"),
            };
            let weight = if r.weight_bytes > 0 { format!("{:.2}", r.weight_bytes as f64 / 1e6) } else { "-".into() };
            println!("{i:>4}  {:<26} {:<12} {:<14} {weight:>10}  {what:<44} {}", r.node, r.op, format!("{:?}", r.output), r.reason);
        }
        steps.push(PlannedStep { shape, nodes });
    }
    if let Some(path) = args.json {
        let file = PlanFile {
            model,
            notes: config_notes,
            caps: lowering.caps.clone(),
            config: Some(lowering.graph.config.clone()),
            fusions: lowering.fusions.clone(),
            memory: lowering.memory.clone(),
            steps,
        };
        let text = serde_json::to_string_pretty(&file).expect("plans serialise");
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        eprintln!("fdpp: plan written to {}", path.display());
    }
    Ok(())
}
