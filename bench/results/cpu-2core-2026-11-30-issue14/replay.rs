//! Replays the tuner's choice on stored profiles: choose from `linear`, score on `verification`.
use fdpp_runtime::dataflow::DataflowTable;
use fdpp_runtime::lower::caps::BackendCaps;
use fdpp_runtime::lower::linear_choice;
use fdpp_runtime::tune::profile::DeviceProfile;
use fdpp_runtime::tune::search::{self, ShapeTimes};

fn main() {
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap();
        let text = &text[text.find('{').unwrap()..];
        let p: DeviceProfile = serde_json::from_str(text).unwrap();
        let caps = match p.key.backend {
            fdpp_runtime::lower::caps::BackendKind::Cuda => BackendCaps::cuda_builtin(p.key.weights),
            _ => BackendCaps::wgpu_builtin(),
        };
        let lin = &caps.linear;
        let (mut pts, mut w, mut wr, mut stored_w) = (0, 0, 0, 0);
        let mut seconds = vec![];
        for s in &p.summary {
            let (n, k) = (s.n, s.k);
            let Some(entry) = search::choose(&ShapeTimes::new(&p.linear, n, k), lin) else { continue };
            let mut table = DataflowTable { shapes: vec![entry.clone()], ..caps.table.clone() };
            table.shapes[0].n = n;
            let times = ShapeTimes::new(&p.verification, n, k);
            let sc = search::score(&times, lin, |m| linear_choice(&table, lin, n, k, m).0);
            pts += sc.points;
            w += sc.within_5pct;
            wr += sc.within_5pct_of_runnable.unwrap();
            stored_w += s.tuned.within_5pct;
            if let Some(sec) = entry.flat_second {
                seconds.push(format!("[{n},{k}] {} then {} from {}", entry.flat.unwrap(), sec.tiling, sec.from_m));
            }
            println!("  [{n},{k}] replay {}/{} (runnable {}), stored run {}/{}", sc.within_5pct, sc.points, sc.within_5pct_of_runnable.unwrap(), s.tuned.within_5pct, s.tuned.points);
        }
        println!("{path}: replay {w}/{pts} within 5% ({wr} of runnable); stored tuned {stored_w}; second tilings: {seconds:?}");
    }
}
