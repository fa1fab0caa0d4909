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

/// Rendering limits: a template is a program from the model file. Real templates take a
/// few thousand steps and write the prompt; these stop loops of 1e10 steps and strings
/// built up to gigabytes.
pub const MAX_TEMPLATE_FUEL: u64 = 50_000_000;
pub const MAX_TEMPLATE_OUTPUT: usize = 16 << 20;

pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
    /// Why the template does not compile: reported when it is used, not at load.
    broken: Option<String>,
    bos_token: String,
    eos_token: String,
}

/// minijinja's kind and detail, with the line of the template it is about.
fn template_err(e: minijinja::Error) -> Error {
    let mut msg = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line} of the template)"));
    }
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::ChatTemplate(msg)
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not compile is an error.
    pub fn new(source: String, tokenizer: &Tokenizer) -> Result<Self> {
        let t = Self::lenient(source, tokenizer);
        match &t.broken {
            Some(e) => Err(Error::ChatTemplate(e.clone())),
            None => Ok(t),
        }
    }

    /// Compiles `source`, keeping a compile error for [`ChatTemplate::render`] to report:
    /// a model whose template is broken still runs plain prompts.
    pub fn lenient(source: String, tokenizer: &Tokenizer) -> Self {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().expect("a valid syntax");
        env.set_syntax(syntax);
        env.set_fuel(Some(MAX_TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
        let broken = env.add_template_owned("chat", source.clone()).err().map(|e| match template_err(e) {
            Error::ChatTemplate(m) => m,
            other => other.to_string(),
        });
        ChatTemplate {
            source,
            env,
            broken,
            bos_token: tokenizer.bos_token().unwrap_or_default().to_string(),
            eos_token: tokenizer.eos_token().unwrap_or_default().to_string(),
        }
    }

    /// Why the template does not compile, if it does not.
    pub fn error(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    pub fn from_gguf(g: &GgufFile, tokenizer: &Tokenizer) -> Result<Option<Self>> {
        match g.get_str("tokenizer.chat_template")? {
            Some(s) => Ok(Some(Self::lenient(s.to_string(), tokenizer))),
            None => Ok(None),
        }
    }

    /// `chat_template.jinja`, else `chat_template` of tokenizer_config.json (a string, or a
    /// list of named templates of which `default` is used).
    pub fn from_hf_dir(dir: &Path, tokenizer: &Tokenizer) -> Result<Option<Self>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            let s = String::from_utf8(super::read_small(&jinja)?)
                .map_err(|_| Error::InvalidUtf8 { path: jinja.clone(), what: "the chat template".into() })?;
            return Ok(Some(Self::lenient(s, tokenizer)));
        }
        let config = dir.join("tokenizer_config.json");
        if !config.exists() {
            return Ok(None);
        }
        let text = super::read_small(&config)?;
        let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Malformed {
            path: config.clone(),
            what: "JSON".into(),
            reason: e.to_string(),
        })?;
        let source = match &v["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(list) => {
                list.iter().find(|t| t["name"] == "default").and_then(|t| t["template"].as_str()).map(str::to_string)
            }
            _ => None,
        };
        Ok(source.map(|s| Self::lenient(s, tokenizer)))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        if let Some(e) = &self.broken {
            return Err(Error::ChatTemplate(e.clone()));
        }
        let template = self.env.get_template("chat").map_err(template_err)?;
        let mut out = Bounded(Vec::new());
        let rendered = template.render_captured_to(
            context! {
                messages => messages.iter().map(|m| context! { role => &m.role, content => &m.content }).collect::<Vec<_>>(),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.0).map_err(|_| Error::ChatTemplate("the output is not UTF-8".into())),
            Err(_) if out.0.len() > MAX_TEMPLATE_OUTPUT => {
                Err(Error::ChatTemplate(format!("its output exceeds fdpp's limit of {MAX_TEMPLATE_OUTPUT} bytes")))
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                Err(Error::ChatTemplate(format!("rendering took more than fdpp's limit of {MAX_TEMPLATE_FUEL} steps")))
            }
            Err(e) => Err(template_err(e)),
        }
    }
}

/// Output that fails once it grows beyond `MAX_TEMPLATE_OUTPUT` (keeping one byte more, so
/// the failure is recognised).
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (MAX_TEMPLATE_OUTPUT + 1).saturating_sub(self.0.len());
        self.0.extend_from_slice(&buf[..buf.len().min(room)]);
        if buf.len() > room {
            return Err(std::io::Error::other("the chat template's output is too long"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The warning a loader gives for a template that does not compile.
pub fn broken_note(template: Option<&ChatTemplate>) -> Option<String> {
    let e = template?.error()?;
    Some(format!("the chat template does not compile ({e}): --chat fails with this model, plain prompts run"))
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::gguf::GgufFile;

    /// SmolLM2-135M-Instruct's template, as its GGUF stores it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn gguf() -> GgufFile {
        GgufFile::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/tokenizer/ggml-vocab-gpt-2.gguf")).unwrap()
    }

    fn tokenizer() -> Tokenizer {
        Tokenizer::from_gguf(&gguf()).unwrap()
    }

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }

    fn render(source: &str, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        ChatTemplate::new(source.to_string(), &tokenizer())?.render(messages, add_generation_prompt)
    }

    fn tmp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fdpp-chat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn smollm2_template_renders_like_transformers() {
        let user = [msg("user", "Hi")];
        assert_eq!(
            render(SMOLLM2, &user, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_system = [msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello!")];
        assert_eq!(
            render(SMOLLM2, &with_system, false).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let source = "{{ messages[0]['content'].strip() }}|{{ messages[0].role.upper() }}|{{ messages[0].content.split(',') | length }}|{% if messages[0].content.strip().startswith('a') %}starts{% endif %}";
        assert_eq!(render(source, &[msg("user", "  a,b,c \n")], false).unwrap(), "a,b,c|USER|3|starts");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let source = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('Tool messages are not supported') }}{% endif %}{{ m.content }}{% endfor %}";
        assert_eq!(render(source, &[msg("user", "ok")], false).unwrap(), "ok");
        let e = render(source, &[msg("tool", "x")], false).err().unwrap();
        assert!(matches!(&e, Error::ChatTemplate(m) if m.contains("Tool messages are not supported")), "{e}");
    }

    #[test]
    fn syntax_errors_are_reported_with_their_line() {
        let e = ChatTemplate::new("{% for m in messages %}\n{{ m.content }\n{% endfor %}".into(), &tokenizer()).err().unwrap();
        let Error::ChatTemplate(m) = &e else { panic!("{e}") };
        assert!(m.contains("syntax error") && m.contains("line 2"), "{m}");
        let e = ChatTemplate::new("{% for m in messages %}{{ m.content }}".into(), &tokenizer()).err().unwrap();
        assert!(matches!(&e, Error::ChatTemplate(m) if m.contains("syntax error")), "{e}");
    }

    #[test]
    fn rendering_is_bounded_in_steps_and_output() {
        let hang = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let e = render(hang, &[msg("user", "x")], true).unwrap_err().to_string();
        assert!(e.contains(&format!("limit of {MAX_TEMPLATE_FUEL} steps")), "{e}");
        let long = "{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}";
        let e = render(long, &[msg("user", &"y".repeat(1000))], true).unwrap_err().to_string();
        assert!(e.contains(&format!("exceeds fdpp's limit of {MAX_TEMPLATE_OUTPUT} bytes")), "{e}");
    }

    #[test]
    fn a_broken_template_fails_only_when_used() {
        let t = ChatTemplate::lenient("{% for m in messages %}".into(), &tokenizer());
        assert!(t.error().is_some_and(|e| e.contains("syntax error")));
        let e = t.render(&[msg("user", "x")], true).unwrap_err().to_string();
        assert!(e.contains("syntax error"), "{e}");
    }

    #[test]
    fn blocks_are_trimmed_as_transformers_does() {
        // trim_blocks + lstrip_blocks: block tags take their line with them; no trailing
        // newline kept at the end of the template.
        let source = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU: {{ m.content }}\n    {% else %}\nA: {{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        assert_eq!(render(source, &[msg("user", "q"), msg("assistant", "r")], false).unwrap(), "U: q\nA: r\n");
        assert_eq!(render("x\n", &[], false).unwrap(), "x");
    }

    #[test]
    fn bos_eos_and_generation_prompt_are_in_the_context() {
        let t = tokenizer();
        let c =
            ChatTemplate::new("{{ bos_token }}{{ messages | length }}{% if add_generation_prompt %}+{% endif %}{{ eos_token }}".into(), &t)
                .unwrap();
        let (bos, eos) = (t.bos_token().unwrap(), t.eos_token().unwrap());
        assert_eq!(c.render(&[msg("user", "a")], true).unwrap(), format!("{bos}1+{eos}"));
        assert_eq!(c.render(&[], false).unwrap(), format!("{bos}0{eos}"));
    }

    #[test]
    fn strftime_now_gives_todays_date() {
        let s = render("{{ strftime_now('%Y-%m-%d|%d %b %Y|%B') }}", &[], false).unwrap();
        let parts: Vec<&str> = s.split('|').collect();
        let date: Vec<&str> = parts[0].split('-').collect();
        assert_eq!(date.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 2, 2], "{s}");
        assert!(date[0].parse::<u32>().unwrap() >= 2024, "{s}");
        assert!((1..=12).contains(&date[1].parse::<u32>().unwrap()), "{s}");
        assert_eq!(parts[1], format!("{} {} {}", date[2], &parts[2][..3], date[0]), "{s}");
    }

    #[test]
    fn where_templates_come_from() {
        let t = tokenizer();
        assert!(ChatTemplate::from_gguf(&gguf(), &t).unwrap().is_none());

        let dir = tmp_dir("sources");
        assert!(ChatTemplate::from_hf_dir(&dir, &t).unwrap().is_none());
        let config = dir.join("tokenizer_config.json");
        std::fs::write(&config, r#"{"eos_token": "x"}"#).unwrap();
        assert!(ChatTemplate::from_hf_dir(&dir, &t).unwrap().is_none());
        std::fs::write(&config, r#"{"chat_template": "config:{{ messages[0].content }}"}"#).unwrap();
        assert_eq!(ChatTemplate::from_hf_dir(&dir, &t).unwrap().unwrap().render(&[msg("user", "a")], false).unwrap(), "config:a");
        std::fs::write(
            &config,
            r#"{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "default:{{ messages[0].content }}"}]}"#,
        )
        .unwrap();
        assert_eq!(ChatTemplate::from_hf_dir(&dir, &t).unwrap().unwrap().render(&[msg("user", "a")], false).unwrap(), "default:a");
        std::fs::write(dir.join("chat_template.jinja"), "file:{{ messages[0].content }}").unwrap();
        let c = ChatTemplate::from_hf_dir(&dir, &t).unwrap().unwrap();
        assert_eq!(c.source(), "file:{{ messages[0].content }}");
        assert_eq!(c.render(&[msg("user", "a")], false).unwrap(), "file:a");
        std::fs::remove_dir_all(&dir).ok();
    }
}
