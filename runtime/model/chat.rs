//! Chat templates: the model's own Jinja source rendered with minijinja, configured the way
//! Hugging Face's `apply_chat_template` runs it (trim/lstrip blocks, Python string methods,
//! `raise_exception`, `strftime_now`).

use std::path::Path;

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use super::Tokenizer;
use super::gguf::GgufFile;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn template_err(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::ChatTemplate(msg)
}

impl ChatTemplate {
    pub fn new(source: String, tokenizer: &Tokenizer) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_err)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
        env.add_template_owned("chat", source.clone()).map_err(template_err)?;
        Ok(ChatTemplate {
            source,
            env,
            bos_token: tokenizer.bos_token().unwrap_or_default().to_string(),
            eos_token: tokenizer.eos_token().unwrap_or_default().to_string(),
        })
    }

    pub fn from_gguf(g: &GgufFile, tokenizer: &Tokenizer) -> Result<Option<Self>> {
        match g.get_str("tokenizer.chat_template")? {
            Some(s) => Ok(Some(Self::new(s.to_string(), tokenizer)?)),
            None => Ok(None),
        }
    }

    /// `chat_template.jinja`, else `chat_template` of tokenizer_config.json (a string, or a
    /// list of named templates of which `default` is used).
    pub fn from_hf_dir(dir: &Path, tokenizer: &Tokenizer) -> Result<Option<Self>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            let s = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
            return Ok(Some(Self::new(s, tokenizer)?));
        }
        let config = dir.join("tokenizer_config.json");
        if !config.exists() {
            return Ok(None);
        }
        let text = std::fs::read(&config).map_err(|e| Error::io(&config, e))?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::Malformed { path: config.clone(), what: "JSON".into(), reason: e.to_string() })?;
        let source = match &v["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        };
        source.map(|s| Self::new(s, tokenizer)).transpose()
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template("chat").map_err(template_err)?;
        template
            .render(context! {
                messages => messages.iter().map(|m| context! { role => &m.role, content => &m.content }).collect::<Vec<_>>(),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(template_err)
    }
}

/// The current UTC date/time for templates that print today's date (`%d %b %Y` etc.).
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}
