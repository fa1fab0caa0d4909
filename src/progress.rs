//! Progress bars on stderr, created on first update so quick work shows nothing.

use indicatif::{ProgressBar, ProgressStyle};

pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn hidden() -> Self {
        Bar(None)
    }

    fn get(&mut self, total: u64, template: &str, msg: &'static str) -> &ProgressBar {
        self.0.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
            bar.set_message(msg);
            bar
        })
    }

    pub fn count(&mut self, done: usize, total: usize, msg: &'static str) {
        self.get(total as u64, "{msg:20} [{bar:40}] {pos}/{len} ({elapsed})", msg).set_position(done as u64);
    }

    pub fn bytes(&mut self, done: u64, total: u64, msg: &'static str) {
        self.get(total, "{msg:32} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})", msg).set_position(done);
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
    }
}
