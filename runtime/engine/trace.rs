//! The run trace: which implementation each node ran, why, and how long it took. The CLI
//! prints it and the viewer draws it; both read this type (serialised as JSON).

use serde::{Deserialize, Serialize};

use crate::backend::NodeRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Prefill,
    Decode,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepTrace {
    pub phase: Phase,
    /// Tokens in the step.
    pub m: usize,
    pub wall_micros: f64,
    pub nodes: Vec<NodeRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Trace {
    pub model: String,
    pub backend: String,
    /// The last prefill step and the first decode step after it.
    pub steps: Vec<StepTrace>,
}

/// Device time of one kind of node in a step: every node with this op and implementation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpTime {
    pub op: String,
    pub implementation: String,
    pub nodes: usize,
    /// Sum of the nodes' times; `None` when the backend timed none of them (profiling off).
    pub micros: Option<f64>,
}

/// Nodes grouped by (op, implementation), the most expensive kind first (then by name).
pub fn op_summary(records: &[NodeRecord]) -> Vec<OpTime> {
    let mut kinds: std::collections::BTreeMap<(&str, &str), OpTime> = Default::default();
    for r in records {
        let e = kinds.entry((&r.op, &r.implementation)).or_insert_with(|| OpTime {
            op: r.op.clone(),
            implementation: r.implementation.clone(),
            nodes: 0,
            micros: None,
        });
        e.nodes += 1;
        if let Some(us) = r.micros {
            *e.micros.get_or_insert(0.0) += us;
        }
    }
    let mut out: Vec<OpTime> = kinds.into_values().collect();
    // Stable: equal times keep the (op, implementation) order.
    out.sort_by(|a, b| b.micros.unwrap_or(-1.0).total_cmp(&a.micros.unwrap_or(-1.0)));
    out
}

impl StepTrace {
    /// Where this step's device time went, per op kind (see [`op_summary`]).
    pub fn op_summary(&self) -> Vec<OpTime> {
        op_summary(&self.nodes)
    }

    /// Sum of the nodes' device times, when any was timed.
    pub fn node_micros(&self) -> Option<f64> {
        self.nodes.iter().filter_map(|n| n.micros).reduce(|a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: &str, implementation: &str, micros: Option<f64>) -> NodeRecord {
        NodeRecord {
            node: format!("{op}.{implementation}"),
            op: op.into(),
            implementation: implementation.into(),
            reason: String::new(),
            micros,
        }
    }

    #[test]
    fn op_summary_groups_by_op_and_implementation_most_expensive_first() {
        let step = StepTrace {
            phase: Phase::Decode,
            m: 1,
            wall_micros: 100.0,
            nodes: vec![
                rec("linear", "A:gemv", Some(10.0)),
                rec("rms_norm", "fused", Some(0.5)),
                rec("linear", "A:gemv", Some(20.0)),
                rec("attention", "split-KV unified max", Some(12.0)),
                rec("linear", "B:flat_gemm", Some(1.0)),
                rec("rms_norm", "fused", Some(0.5)),
            ],
        };
        let s = step.op_summary();
        let got: Vec<(&str, &str, usize, Option<f64>)> =
            s.iter().map(|o| (o.op.as_str(), o.implementation.as_str(), o.nodes, o.micros)).collect();
        assert_eq!(
            got,
            vec![
                ("linear", "A:gemv", 2, Some(30.0)),
                ("attention", "split-KV unified max", 1, Some(12.0)),
                ("linear", "B:flat_gemm", 1, Some(1.0)),
                ("rms_norm", "fused", 2, Some(1.0)),
            ]
        );
        assert_eq!(step.node_micros(), Some(44.0));
    }

    #[test]
    fn untimed_nodes_are_counted_without_a_time() {
        let s = op_summary(&[rec("add", "elementwise", None), rec("add", "elementwise", None), rec("linear", "A:gemv", Some(3.0))]);
        assert_eq!(s[0], OpTime { op: "linear".into(), implementation: "A:gemv".into(), nodes: 1, micros: Some(3.0) });
        assert_eq!(s[1], OpTime { op: "add".into(), implementation: "elementwise".into(), nodes: 2, micros: None });
        let step = StepTrace { phase: Phase::Prefill, m: 3, wall_micros: 1.0, nodes: vec![rec("add", "elementwise", None)] };
        assert_eq!(step.node_micros(), None);
        // The summary serialises beside the trace for the viewer.
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v[1]["micros"], serde_json::Value::Null);
        assert_eq!(v[0]["nodes"], 1);
    }
}
