//! `fdpp inspect`: the static graph as a table, without reading the weights.

use std::path::Path;

use fdpp_runtime::Result;
use fdpp_runtime::dataflow::DataflowTable;
use fdpp_runtime::graph::{self, Op, Plan, shape_string};
use fdpp_runtime::model::Model;

pub fn run(path: &Path, m: usize) -> Result<()> {
    let model = Model::load(path)?;
    let g = graph::llama::build(&model.config);
    let plan = Plan::new(&g)?;
    let table = DataflowTable::cpu_default();
    println!("{}", model.describe());
    let param_bytes: usize = g.params.iter().map(|p| p.numel() * 4).sum();
    println!(
        "graph: {} nodes, {} parameters ({:.1} MB as f32); memory plan: {} buffers, {} floats per token",
        g.nodes.len(),
        g.params.len(),
        param_bytes as f64 / 1e6,
        plan.memory.widths.len(),
        plan.memory.buffer_elements(&g.tensors, 1, 1).iter().sum::<usize>(),
    );
    println!(
        "{:>4}  {:<26} {:<12} {:<26} {:<16} {:<20} {:>12}  {}",
        "#",
        "node",
        "op",
        "inputs",
        "output",
        "parameter",
        "param bytes",
        format!("cpu dataflow at m={m}")
    );
    for (row, &i) in plan.order.iter().enumerate() {
        let n = &g.nodes[i];
        let inputs: Vec<String> = n.inputs.iter().map(|&t| shape_string(&g.tensors[t].shape)).collect();
        let (pname, pbytes) = match n.op.param() {
            Some(p) => (g.params[p].name.clone(), format!("{}", g.params[p].numel() * 4)),
            None => ("-".into(), "-".into()),
        };
        let dataflow = match &n.op {
            Op::Linear { n: nn, k, .. } => {
                let rows = g.tensors[n.output].shape[0].eval(m, 0, 1);
                let c = table.choose(*nn, *k, rows);
                format!("{}  {}", c.implementation.label(), c.reason)
            }
            _ => String::new(),
        };
        println!(
            "{:>4}  {:<26} {:<12} {:<26} {:<16} {:<20} {:>12}  {}",
            row,
            n.name,
            n.op.kind_name(),
            inputs.join(" "),
            shape_string(&g.tensors[n.output].shape),
            pname,
            pbytes,
            dataflow
        );
    }
    Ok(())
}
