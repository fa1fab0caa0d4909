//! A generation session: builds the graph, loads the weights into a backend through the
//! driver (which lowers each step for it), then runs prefill (the whole prompt in one
//! step) and the pipelined decode with a sampler, streaming text as it is produced, and
//! keeps the typed trace of the last prefill and decode step.

pub mod driver;
pub mod memory;

use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use driver::Driver;

use crate::backend::{BackendOptions, Capacity, StepInput};
use crate::error::{Error, Result};
use crate::graph;
use crate::lower::LoweringOptions;
use crate::model::{ChatMessage, ChatTemplate, Model, ModelConfig, Tokenizer};
pub use crate::sampling::{Sampler, SamplingParams};
pub use crate::trace::{Phase, StepTrace};

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The backend and its own options.
    pub backend: BackendOptions,
    /// KV positions per sequence; `None` uses the model's trained context.
    pub max_context: Option<usize>,
    /// Sequences decoded together (batch).
    pub max_seqs: usize,
    pub lowering: LoweringOptions,
    /// Use the model's stored calibration of phi (`fdpp calibrate`) where `lowering` asks
    /// for the default phi.
    pub calibration: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backend: BackendOptions::Cpu,
            max_context: None,
            max_seqs: 1,
            lowering: LoweringOptions::default(),
            calibration: true,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Prompt {
    /// Text as is (BOS added when the tokenizer asks for it).
    Raw(String),
    /// Messages rendered with the model's chat template, assistant turn opened.
    Chat(Vec<ChatMessage>),
}

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StopReason {
    /// An end-of-sequence / end-of-turn token was produced (not included in the text).
    EndToken(u32),
    MaxTokens,
    ContextFull,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunStats {
    /// Backend and device (adapter name and driver for GPU backends).
    pub backend: String,
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    pub generated_tokens: usize,
    /// Time of the decode steps (the first generated token comes from prefill).
    pub decode_steps: usize,
    pub decode_secs: f64,
}

impl RunStats {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-12)
    }
    pub fn decode_tok_s(&self) -> f64 {
        self.decode_steps as f64 / self.decode_secs.max(1e-12)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateOutput {
    pub prompt_ids: Vec<u32>,
    /// Generated ids, including the end token if one stopped the run.
    pub ids: Vec<u32>,
    pub text: String,
    /// The five most likely tokens after the prompt, with their logits.
    pub first_top5: Vec<(u32, f32)>,
    pub stop: StopReason,
    pub stats: RunStats,
}

pub struct Engine {
    pub config: ModelConfig,
    pub model_description: String,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    driver: Driver,
    max_context: usize,
    /// The last prefill step and the last decode step after it.
    steps: Vec<StepTrace>,
    /// Why no stored calibration of phi is used (missing, corrupt, stale), in one line.
    calibration_note: Option<String>,
}

impl Engine {
    /// Builds the graph for `model`, checks its weights, opens the backend and loads them
    /// (`progress(done, total)` per weight). The model's stored calibration of phi is used
    /// where `opts` allows (`calibration_note` says when there is none to use).
    pub fn load(model: Model, opts: &EngineOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Engine> {
        let graph = graph::llama::build(&model.config);
        let max_context = opts.max_context.unwrap_or(model.config.max_context).min(model.config.max_context);
        let capacity = Capacity { max_seqs: opts.max_seqs, max_context };
        let (lowering, calibration_note) = if opts.calibration {
            crate::calibrate::store::apply(&model.config, model.weights.as_ref(), &opts.lowering)
        } else {
            (opts.lowering.clone(), None)
        };
        let driver = Driver::load(&opts.backend, graph, &lowering, model.weights.as_ref(), capacity, progress)?;
        Ok(Engine {
            model_description: model.describe(),
            config: model.config,
            tokenizer: model.tokenizer,
            chat_template: model.chat_template,
            driver,
            max_context,
            steps: vec![],
            calibration_note,
        })
    }

    /// Why the default phi runs although calibrations exist (none stored for this model,
    /// or the stored one is corrupt or stale), in one line for the user.
    pub fn calibration_note(&self) -> Option<&str> {
        self.calibration_note.as_deref()
    }

    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    pub fn backend_description(&self) -> String {
        self.driver.describe()
    }
    pub fn max_context(&self) -> usize {
        self.max_context
    }
    /// The last prefill step and the last decode step after it, as they ran.
    pub fn trace_steps(&self) -> &[StepTrace] {
        &self.steps
    }

    /// Token ids of a prompt, exactly as generation would feed them.
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Raw(text) => {
                if text.is_empty() {
                    return Err(Error::EmptyPrompt);
                }
                self.tokenizer.encode(text, true)?
            }
            Prompt::Chat(messages) => {
                if messages.iter().all(|m| m.content.is_empty()) {
                    return Err(Error::EmptyPrompt);
                }
                let template = self
                    .chat_template
                    .as_ref()
                    .ok_or_else(|| Error::ChatTemplate("this model has no chat template; run without --chat".into()))?;
                // The template writes special tokens as text; HF encodes it without adding more.
                self.tokenizer.encode(&template.render(messages, true)?, false)?
            }
        };
        if ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if ids.len() > self.max_context {
            return Err(Error::PromptTooLong { tokens: ids.len(), limit: self.max_context, hint: "; shorten the prompt".into() });
        }
        Ok(ids)
    }

    /// One graph run for sequence 0 from position `start`; returns the last token's logits.
    /// `start == 0` forgets what the sequence held before.
    pub fn forward(&mut self, ids: &[u32], start: usize) -> Result<Vec<f32>> {
        if start == 0 {
            self.driver.reset_sequence(0);
        }
        let positions: Vec<usize> = (start..start + ids.len()).collect();
        let seqs = vec![0; ids.len()];
        let out_rows = [ids.len().saturating_sub(1)];
        self.driver.step(&StepInput { tokens: ids, positions: &positions, seqs: &seqs, out_rows: &out_rows })
    }

    /// Decodes `steps` tokens of sequence 0 after `token` at position `pos` (the positions
    /// before it already in the cache) and returns them; no stop tokens are checked.
    pub fn decode_ids(&mut self, token: u32, pos: usize, steps: usize, sampling: &SamplingParams) -> Result<Vec<u32>> {
        sampling.validate()?;
        let mut ids = Vec::with_capacity(steps);
        let input = StepInput { tokens: &[token], positions: &[pos], seqs: &[0], out_rows: &[0] };
        self.driver.decode(&input, steps, &mut Sampler::new(sampling.clone()), &mut |step| {
            ids.push(step[0]);
            true
        })?;
        Ok(ids)
    }

    fn record(&mut self, phase: Phase, secs: f64) {
        if phase == Phase::Prefill {
            self.steps.clear();
        }
        if self.steps.len() < 2
            && let Some((shape, nodes)) = self.driver.last_records()
        {
            let device_micros = self.driver.last_timing().device_micros;
            let fallback_rows = self.driver.last_fallback_rows();
            self.steps.push(StepTrace { phase, shape, wall_micros: secs * 1e6, device_micros, fallback_rows, nodes });
        }
    }

    /// Generates from `req`, calling `on_text` with each new piece of text.
    pub fn generate(&mut self, req: &GenerateRequest, on_text: &mut dyn FnMut(&str)) -> Result<GenerateOutput> {
        req.sampling.validate()?;
        let prompt_ids = self.tokenize(&req.prompt)?;
        let mut sampler = Sampler::new(req.sampling.clone());
        let mut stats = RunStats { prompt_tokens: prompt_ids.len(), backend: self.driver.describe(), ..Default::default() };

        let t = Instant::now();
        let logits = self.forward(&prompt_ids, 0)?;
        stats.prefill_secs = t.elapsed().as_secs_f64();
        self.record(Phase::Prefill, stats.prefill_secs);
        let first_top5 = crate::sampling::top_k(&logits, 5);

        let mut out = Collector {
            ids: vec![],
            stream: TextStream::default(),
            stop: None,
            max_tokens: req.max_tokens,
            stops: self.tokenizer.stop_ids().to_vec(),
        };
        let first = sampler.sample(&logits);
        let pos = prompt_ids.len();
        if req.max_tokens > 0 && out.accept(first, &self.tokenizer, on_text)? {
            // Each decode step takes one more position.
            let steps = (req.max_tokens - out.ids.len()).min(self.max_context - pos);
            let input = StepInput { tokens: &[first], positions: &[pos], seqs: &[0], out_rows: &[0] };
            let mut failed = None;
            let t = Instant::now();
            let tokenizer = &self.tokenizer;
            self.driver.decode(&input, steps, &mut sampler, &mut |ids| {
                stats.decode_steps += 1;
                out.accept(ids[0], tokenizer, on_text).unwrap_or_else(|e| {
                    failed = Some(e);
                    false
                })
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            stats.decode_secs = t.elapsed().as_secs_f64();
            if stats.decode_steps > 0 {
                self.record(Phase::Decode, stats.decode_secs / stats.decode_steps as f64);
            }
        }
        let stop = out.stop.unwrap_or(if out.ids.len() >= req.max_tokens { StopReason::MaxTokens } else { StopReason::ContextFull });
        stats.generated_tokens = out.ids.len();
        Ok(GenerateOutput { prompt_ids, ids: out.ids, text: out.stream.text, first_top5, stop, stats })
    }

    /// Times every node of the following steps on the device (GPU backends; slower), so
    /// the trace's node records carry `micros`.
    pub fn set_profiling(&mut self, on: bool) -> Result<()> {
        self.driver.set_profiling(on)
    }
}

/// The generated ids of one request, and when to stop taking more.
struct Collector {
    ids: Vec<u32>,
    stream: TextStream,
    stop: Option<StopReason>,
    max_tokens: usize,
    stops: Vec<u32>,
}

impl Collector {
    /// Takes one generated id; false when generation should stop.
    fn accept(&mut self, id: u32, tokenizer: &Tokenizer, on_text: &mut dyn FnMut(&str)) -> Result<bool> {
        self.ids.push(id);
        if self.stops.contains(&id) {
            self.stop = Some(StopReason::EndToken(id));
            return Ok(false);
        }
        self.stream.push(tokenizer, &self.ids, on_text)?;
        Ok(self.ids.len() < self.max_tokens)
    }
}

/// Incremental detokenisation: each new id decodes a short window of the latest ids, not
/// the whole text again. The window starts one piece back, so tokenizers that drop a
/// leading space at the start of a decode still join pieces correctly. A window ending in
/// U+FFFD is a multi-byte character split over tokens: its text waits for the next id.
#[derive(Default)]
struct TextStream {
    /// Ids before `prefix` are settled; `prefix..read` is the context of the window.
    prefix: usize,
    read: usize,
    text: String,
}

impl TextStream {
    fn push(&mut self, tokenizer: &Tokenizer, ids: &[u32], on_text: &mut dyn FnMut(&str)) -> Result<()> {
        let before = tokenizer.decode(&ids[self.prefix..self.read], true)?;
        let now = tokenizer.decode(&ids[self.prefix..], true)?;
        if now.ends_with('\u{FFFD}') {
            return Ok(());
        }
        if let Some(piece) = now.get(before.len()..).filter(|p| !p.is_empty() && now.starts_with(before.as_str())) {
            on_text(piece);
            self.text.push_str(piece);
            self.prefix = self.read;
            self.read = ids.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
