//! Chat templates: the model's own Jinja source rendered with minijinja, configured the way
//! Hugging Face's `apply_chat_template` runs it (trim/lstrip blocks, Python string methods,
//! `raise_exception`, `strftime_now`).

use std::path::Path;

use minijinja::machinery::Token;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::ObjectRepr;
use minijinja::{Environment, ErrorKind, State, Value, context};
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
/// built up to gigabytes. minijinja also charges a step for every 64 bytes a value takes,
/// so the step limit bounds what one render allocates in all to about 320 MB.
pub const MAX_TEMPLATE_FUEL: u64 = 5_000_000;
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
        Self::compile(source, tokenizer, true)
    }

    /// `bound_variables: false` compiles the source as written, for the tests that compare the two.
    fn compile(source: String, tokenizer: &Tokenizer, bound_variables: bool) -> Self {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().expect("a valid syntax");
        env.set_syntax(syntax.clone());
        env.set_fuel(Some(MAX_TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
        add_store_checks(&mut env);
        let message = |e| match template_err(e) {
            Error::ChatTemplate(m) => m,
            other => other.to_string(),
        };
        // The source as written first, so that a broken template is reported in its own terms.
        let mut broken = env.add_template_owned("chat", source.clone()).err().map(message);
        if broken.is_none() && bound_variables {
            broken = match bounded_source(&source, syntax) {
                Ok(bounded) => env
                    .add_template_owned("chat", bounded)
                    .err()
                    .map(|e| format!("the rewrite by which fdpp bounds its variables does not compile: {}", message(e))),
                Err(reserved) => Some(reserved),
            };
        }
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

// Bounded template variables.
//
// minijinja 3.1 formats, compares, serialises and drops values recursively, one native stack
// frame per nesting level: a value nested some 100,000 deep, or a namespace that holds itself,
// overflows the stack and aborts the process (found by the fuzzer). One expression nests at most
// as deep as the parser allows (150 levels); values grow beyond that only by being bound to a
// variable and built on: `{% set %}` (across statements, and through namespaces across loop
// iterations), and `with`, `for`, macro and call-block arguments (across nested blocks and
// recursive calls: some 18,000 levels within minijinja's recursion limit, enough to overflow a
// 2 MiB thread stack). minijinja has no hook on any of these (its VM assigns only to its private
// `Namespace` type), so fdpp rewrites the source: `{% set T = E %}` becomes
// `{% set T = __fdpp_bounded((E)) %}`, a block set gets `| __fdpp_bounded` after its filters,
// and `for`/`with`/`macro`/`call` tags are followed by `{% set __fdpp_discarded =
// __fdpp_check(NAMES) %}` ending as the tag ends (`%}`, `-%}`, `+%}`), so that whitespace
// control acts as before. Everything is inserted within the lines of the source: output and
// the lines errors name do not change. The check walks a value iteratively over the tree
// minijinja's recursion sees (a shared list counts once per occurrence) and charges one step
// of fuel per item.
//
// Namespaces and loop objects (whose `previtem`/`nextitem` move) are the values that change
// after they are bound: storing one into a namespace would let a template link them into a
// cycle or an ever longer chain by shallow stores. Stores to an attribute (`_ns`) refuse values
// holding either, so a namespace holds only immutable values, bounded when stored.

const STORE_CHECK: &str = "__fdpp_bounded";
const NAMESPACE_STORE_CHECK: &str = "__fdpp_bounded_ns";
const BINDING_CHECK: &str = "__fdpp_check";
/// Where the rewrite puts values nothing reads.
const DISCARDED: &str = "__fdpp_discarded";
/// A template mentioning a name with this prefix is refused (it could shadow the checks).
const RESERVED_PREFIX: &str = "__fdpp_";

/// Limits on a variable's value: nesting (a value that contains itself reaches it too), items
/// (lists, map keys and values, strings and numbers in them), bytes of its strings.
pub const MAX_STORED_DEPTH: usize = 64;
pub const MAX_STORED_ITEMS: usize = 1_000_000;
pub const MAX_STORED_BYTES: usize = MAX_TEMPLATE_OUTPUT;

fn add_store_checks(env: &mut Environment<'static>) {
    fn store(state: &State, value: Value) -> std::result::Result<Value, minijinja::Error> {
        check_stored(state, &value, false).map(|()| value)
    }
    fn namespace_store(state: &State, value: Value) -> std::result::Result<Value, minijinja::Error> {
        check_stored(state, &value, true).map(|()| value)
    }
    fn bound(state: &State, values: minijinja::value::Rest<Value>) -> std::result::Result<(), minijinja::Error> {
        values.iter().try_for_each(|value| check_stored(state, value, false))
    }
    env.add_function(STORE_CHECK, store);
    env.add_function(NAMESPACE_STORE_CHECK, namespace_store);
    env.add_filter(STORE_CHECK, store);
    env.add_filter(NAMESPACE_STORE_CHECK, namespace_store);
    env.add_function(BINDING_CHECK, bound);
}

/// `source` with the checks inserted; unchanged where it does not tokenize (it does not compile
/// then either). An error if it uses a reserved name.
fn bounded_source(source: &str, syntax: SyntaxConfig) -> std::result::Result<String, String> {
    let Ok(tokens) = minijinja::machinery::tokenize(source, false, syntax).collect::<std::result::Result<Vec<_>, _>>() else {
        return Ok(source.to_string());
    };
    if let Some((name, span)) = tokens.iter().find_map(|(t, span)| match t {
        Token::Ident(name) if name.starts_with(RESERVED_PREFIX) => Some((name, span)),
        _ => None,
    }) {
        return Err(format!("`{name}` (line {} of the template) is a name fdpp reserves", span.start_line));
    }
    // (start, end, text): `text` replaces `source[start..end]`; in source order.
    let mut edits: Vec<(usize, usize, String)> = vec![];
    let mut edit = |start: u32, end: u32, text: String| edits.push((start as usize, end as usize, text));
    let mut i = 0;
    while i + 1 < tokens.len() {
        let (Token::BlockStart, Token::Ident(keyword)) = (&tokens[i].0, &tokens[i + 1].0) else {
            i += 1;
            continue;
        };
        let Some(end) = tokens[i..].iter().position(|(t, _)| matches!(t, Token::BlockEnd)).map(|n| i + n) else { break };
        let tag: Vec<&Token> = tokens[i + 2..end].iter().map(|(t, _)| t).collect();
        let offset = |at: usize| tokens[i + 2 + at].1;
        if *keyword == "set" {
            let assign = top_level(&tag).find(|&at| matches!(tag[at], Token::Assign));
            let attribute = tag[..assign.unwrap_or(tag.len())].iter().any(|t| matches!(t, Token::Dot));
            let check = if attribute { NAMESPACE_STORE_CHECK } else { STORE_CHECK };
            match assign {
                // An empty right-hand side stays a syntax error (`(())` would be an empty tuple).
                Some(at) if at + 1 < tag.len() => {
                    let (start, end) = (offset(at + 1).start_offset, offset(tag.len() - 1).end_offset);
                    edit(start, start, format!("{check}(("));
                    edit(end, end, "))".into());
                }
                Some(_) => {}
                // A block set: the captured text, after the set's own filters.
                None if !tag.is_empty() => {
                    let end = offset(tag.len() - 1).end_offset;
                    edit(end, end, format!(" | {check}"));
                }
                None => {}
            }
        } else if *keyword == "do" {
            // minijinja 3.1 leaves the value of each `{% do %}` on its stack until the render
            // ends (a loop of them grows by it); a set to an unused variable drops it.
            let keyword = tokens[i + 1].1;
            edit(keyword.start_offset, keyword.end_offset, format!("set {DISCARDED} ="));
        } else if let Some(names) = bound_names(keyword, &tag) {
            let close = tokens[end].1;
            let marker = &source[close.start_offset as usize..close.end_offset as usize];
            edit(close.end_offset, close.end_offset, format!("{{% set {DISCARDED} = {BINDING_CHECK}({}) {marker}", names.join(", ")));
        }
        i = end + 1;
    }
    let mut out = String::with_capacity(source.len() + edits.iter().map(|(_, _, s)| s.len()).sum::<usize>());
    let mut copied = 0;
    for (start, end, text) in edits {
        out.push_str(&source[copied..start]);
        out.push_str(&text);
        copied = end;
    }
    out.push_str(&source[copied..]);
    Ok(out)
}

/// The positions of `tag` outside brackets.
fn top_level<'a>(tag: &'a [&Token]) -> impl Iterator<Item = usize> + 'a {
    let mut nesting = 0i32;
    tag.iter().enumerate().filter_map(move |(at, t)| {
        match t {
            Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => nesting += 1,
            Token::ParenClose | Token::BracketClose | Token::BraceClose => nesting -= 1,
            _ => return (nesting == 0).then_some(at),
        }
        None
    })
}

/// The variables a `for`, `with`, `macro` or `call` tag binds (`tag` follows the keyword);
/// `None` for other tags and tags binding nothing.
fn bound_names<'a>(keyword: &str, tag: &[&Token<'a>]) -> Option<Vec<&'a str>> {
    let ident = |t: &Token<'a>| match *t {
        Token::Ident(name) => Some(name),
        _ => None,
    };
    // Argument names: identifiers first in a parenthesised list, or after one of its commas.
    let arguments = |list: &[&Token<'a>]| {
        let mut nesting = 0i32;
        let mut names = vec![];
        for (at, t) in list.iter().enumerate() {
            match t {
                Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => nesting += 1,
                Token::ParenClose | Token::BracketClose | Token::BraceClose => nesting -= 1,
                _ if nesting == 1 && at > 0 && matches!(list[at - 1], Token::ParenOpen | Token::Comma) => names.extend(ident(t)),
                _ => {}
            }
            if nesting == 0 {
                break;
            }
        }
        names
    };
    let names: Vec<&str> = match keyword {
        "for" => {
            let target = top_level(tag).find(|&at| matches!(tag[at], Token::Ident("in"))).unwrap_or(tag.len());
            tag[..target].iter().filter_map(|t| ident(t)).collect()
        }
        "with" => {
            // `a = E, (b, c) = F`: the identifiers before each top-level `=`.
            let mut names = vec![];
            let mut start = 0;
            for at in top_level(tag).filter(|&at| matches!(tag[at], Token::Comma)).chain([tag.len()]) {
                let segment = &tag[start..at];
                let assign = top_level(segment).find(|&a| matches!(segment[a], Token::Assign)).unwrap_or(0);
                names.extend(segment[..assign].iter().filter_map(|t| ident(t)));
                start = at + 1;
            }
            names
        }
        "macro" if matches!(tag.get(1), Some(Token::ParenOpen)) => arguments(&tag[1..]),
        "call" if matches!(tag.first(), Some(Token::ParenOpen)) => arguments(tag),
        _ => vec![],
    };
    (!names.is_empty()).then_some(names)
}

/// Refuses a value past the `MAX_STORED_*` limits, or, stored into a namespace, one holding a
/// namespace or a loop object. Iterative: the walk's own depth is `levels`, at most
/// `MAX_STORED_DEPTH + 1` iterators.
fn check_stored(state: &State, value: &Value, into_namespace: bool) -> std::result::Result<(), minijinja::Error> {
    let refuse = |what: String| Err(minijinja::Error::new(ErrorKind::InvalidOperation, what));
    let (mut items, mut bytes) = (0usize, 0usize);
    let mut levels: Vec<Box<dyn Iterator<Item = Value>>> = vec![Box::new(std::iter::once(value.clone()))];
    let checked = loop {
        let Some(level) = levels.last_mut() else { break Ok(()) };
        let Some(v) = level.next() else {
            levels.pop();
            continue;
        };
        items += 1;
        if items > MAX_STORED_ITEMS {
            break refuse(format!("a template variable's value has more than fdpp's limit of {MAX_STORED_ITEMS} items"));
        }
        bytes = bytes.saturating_add(v.as_bytes().map_or(0, <[u8]>::len));
        if bytes > MAX_STORED_BYTES {
            break refuse(format!("the strings of a template variable's value exceed fdpp's limit of {MAX_STORED_BYTES} bytes"));
        }
        let Some(object) = v.as_object() else { continue };
        if into_namespace && mutable_object_types().iter().any(|t| t == object.type_name()) {
            break refuse(
                "a namespace attribute may not hold a namespace or a loop object (fdpp's limit: they could make a value contain itself)"
                    .to_string(),
            );
        }
        let inner: Option<Box<dyn Iterator<Item = Value>>> = match object.repr() {
            ObjectRepr::Map => {
                object.try_iter_pairs().map(|pairs| Box::new(pairs.flat_map(|(k, v)| [k, v])) as Box<dyn Iterator<Item = Value>>)
            }
            ObjectRepr::Seq | ObjectRepr::Iterable => object.try_iter().map(|values| values as Box<dyn Iterator<Item = Value>>),
            _ => None,
        };
        if let Some(inner) = inner {
            if levels.len() > MAX_STORED_DEPTH {
                break refuse(format!(
                    "a template variable's value is nested deeper than fdpp's limit of {MAX_STORED_DEPTH} levels (or contains itself)"
                ));
            }
            levels.push(inner);
        }
    };
    state.consume_fuel(items as u64)?;
    checked
}

/// The type names of minijinja's namespace and loop objects (private types: found by making one).
fn mutable_object_types() -> &'static [String] {
    static TYPES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        let mut env = Environment::new();
        env.add_function("probe", |v: Value| v.as_object().map_or("", |object| object.type_name()));
        let probed = env.render_str("{{ probe(namespace()) }}|{% for x in [0] %}{{ probe(loop) }}{% endfor %}", ());
        probed.unwrap_or_default().split('|').filter(|name| !name.is_empty()).map(str::to_string).collect()
    })
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

    /// Real templates (the default model's, those of the test vocabularies and the fuzz seeds)
    /// and two written here in the style of current ones (namespaces, tuple and block sets,
    /// macros, whitespace control), by name.
    fn templates_to_compare() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut templates = vec![("SmolLM2".to_string(), SMOLLM2.to_string())];
        for entry in std::fs::read_dir(root.join("tests/data/tokenizer")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "gguf")
                && let Some(source) = GgufFile::open(&path).unwrap().get_str("tokenizer.chat_template").unwrap()
            {
                templates.push((path.display().to_string(), source.to_string()));
            }
        }
        for entry in std::fs::read_dir(root.join("fuzz/corpus/chat_template")).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let source = bytes.split(|&b| b == 0).next().unwrap();
            templates.push((path.display().to_string(), String::from_utf8(source.to_vec()).unwrap()));
        }
        templates.push(("header-style".into(), HEADER_STYLE.into()));
        templates.push(("reasoning-style".into(), REASONING_STYLE.into()));
        templates
    }

    const HEADER_STYLE: &str = r#"{{- bos_token }}
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = "You are a helpful assistant." %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set ns = namespace(turns=0, last_user=-1, roles=[]) %}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}
    {%- set ns.roles = ns.roles + [message.role] %}
{%- endfor %}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' + system_message + '<|eot_id|>' }}
{%- for message in loop_messages %}
    {%- set role, content = message.role, message.content | trim %}
    {%- set (first, second) = [loop.index, loop.length] %}
    {%- set ns.turns = ns.turns + 1 %}
    {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content }}
    {%- if loop.index0 == ns.last_user %} ({{ first }}/{{ second }}, last question){% endif %}
    {{- '<|eot_id|>' }}
{%- endfor %}
{%- set summary %}{{ ns.turns }} turns: {{ ns.roles | join(', ') }}{% endset %}
{%- set ns.shout | upper %}{{ summary }}{% endset %}
{#- {% set hidden = 1 %} #}
{{- '\n' ~ summary ~ '|' ~ ns.shout ~ '|' ~ "{% set not_a_statement = 1 %}" }}
{% raw %}{% set raw_set = 1 %}{% endraw %}
{% if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{% endif %}"#;

    const REASONING_STYLE: &str = "{%- set ns = namespace(open=false, last_query=messages | length - 1, parts=[]) -%}
{%- for message in messages | reverse -%}
  {%- set index = (messages | length - 1) - loop.index0 -%}
  {%- if ns.open == false and message.role == 'user' -%}{%- set ns.open = true -%}{%- set ns.last_query = index -%}{%- endif -%}
{%- endfor -%}
{%- macro block(role, text, think='') -%}
  {%- set body = text.split('</think>')[-1].strip() if '</think>' in text else text -%}
  {%- set ns.parts = ns.parts + [role ~ ':' ~ body | length] -%}
<|{{ role }}|>{% if think %}<think>{{ think }}</think>{% endif %}{{ body }}<|end|>
{% endmacro -%}
{%- for message in messages -%}
  {%- if message.role not in ['system', 'user', 'assistant'] -%}{{ raise_exception('Unexpected role ' ~ message.role) }}{%- endif -%}
  {%- set think = message.content.split('</think>')[0].split('<think>')[-1] if loop.index0 > ns.last_query and '</think>' in message.content else '' -%}
  {{- block(message.role,
            message.content,
            think) -}}
{%- endfor -%}
{{- ns.parts | tojson -}}
{%- if add_generation_prompt %}<|assistant|>{% endif -%}";

    fn conversations() -> Vec<Vec<ChatMessage>> {
        vec![
            vec![],
            vec![msg("user", "Hi")],
            vec![msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Why?")],
            vec![msg("user", "  a,b,c \n"), msg("assistant", "<think>hmm</think> d,e"), msg("user", "again"), msg("assistant", "ok")],
            vec![msg("tool", "{\"x\": 1}")],
        ]
    }

    #[test]
    fn bounding_stores_leaves_the_output_of_real_templates_unchanged() {
        let t = tokenizer();
        let templates = templates_to_compare();
        assert!(templates.len() >= 10, "{}", templates.len());
        let (mut storing, mut rendered, mut compared) = (0, 0, 0);
        for (name, source) in templates {
            let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().unwrap();
            let rewritten = bounded_source(&source, syntax).unwrap();
            assert_eq!(rewritten.lines().count(), source.lines().count(), "{name}");
            storing += rewritten.contains(STORE_CHECK) as usize;
            assert_eq!(rewritten.contains(STORE_CHECK), source.contains("set "), "{name}: {rewritten}");
            let (bounded, plain) = (ChatTemplate::compile(source.clone(), &t, true), ChatTemplate::compile(source.clone(), &t, false));
            assert_eq!(bounded.error(), None, "{name}");
            for messages in conversations() {
                for add_generation_prompt in [false, true] {
                    let with = bounded.render(&messages, add_generation_prompt).map_err(|e| e.to_string());
                    let without = plain.render(&messages, add_generation_prompt).map_err(|e| e.to_string());
                    assert_eq!(with, without, "{name} over {messages:?}");
                    (rendered, compared) = (rendered + with.is_ok() as usize, compared + 1);
                }
            }
        }
        // Most of the comparisons are of output, not of errors (a tool message is refused by some).
        assert!(storing >= 3 && rendered * 10 >= compared * 8, "{storing} storing, {rendered} of {compared} rendered");
        // The two written here render what they are meant to.
        let header = render(HEADER_STYLE, &conversations()[2], true).unwrap();
        assert!(header.contains("(3/3, last question)") && header.contains("3 turns: user, assistant, user|3 TURNS"), "{header}");
        assert!(header.contains("|{% set not_a_statement = 1 %}") && header.contains("{% set raw_set = 1 %}"), "{header}");
        let reasoning = render(REASONING_STYLE, &conversations()[3], true).unwrap();
        assert!(reasoning.contains("<|assistant|>d,e<|end|>") && reasoning.contains("[\"user:9\","), "{reasoning}");
    }

    fn rewrite(source: &str) -> String {
        bounded_source(source, SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().unwrap()).unwrap()
    }

    #[test]
    fn checks_go_where_values_are_bound_and_nowhere_else() {
        for (source, expected) in [
            ("{% set x = 1 %}", "{% set x = __fdpp_bounded((1)) %}"),
            ("{%- set x=y|trim-%}", "{%- set x=__fdpp_bounded((y|trim))-%}"),
            ("{% set a, b = 1, 2 %}", "{% set a, b = __fdpp_bounded((1, 2)) %}"),
            ("{% set (a, b) = f(x=1) %}", "{% set (a, b) = __fdpp_bounded((f(x=1))) %}"),
            ("{% set ns.x = {'k': [1]} %}", "{% set ns.x = __fdpp_bounded_ns(({'k': [1]})) %}"),
            ("{% set a, ns.x = 1, 2 %}", "{% set a, ns.x = __fdpp_bounded_ns((1, 2)) %}"),
            ("{% set x %}a{% endset %}", "{% set x | __fdpp_bounded %}a{% endset %}"),
            ("{% set ns.x | upper %}a{% endset %}", "{% set ns.x | upper | __fdpp_bounded_ns %}a{% endset %}"),
            ("{% set x | indent(width=2) -%}\na{%- endset %}", "{% set x | indent(width=2) | __fdpp_bounded -%}\na{%- endset %}"),
            ("{% set x = [1,\n  2] %}", "{% set x = __fdpp_bounded(([1,\n  2])) %}"),
            ("{{ '{% set x = 1 %}' }}{# {% set x = 1 %} #}{% raw %}{% set x = 1 %}{% endraw %}", ""),
            ("{% if x %}{% with %}{% endwith %}{% endif %}{% macro f() %}{% endmacro %}{% call f() %}{% endcall %}", ""),
            (
                "{% for a, (b, c) in x if a recursive %}{{ loop(a) }}{% endfor %}",
                "{% for a, (b, c) in x if a recursive %}{% set __fdpp_discarded = __fdpp_check(a, b, c) %}{{ loop(a) }}{% endfor %}",
            ),
            ("{%- for m in y -%}\n x{% endfor %}", "{%- for m in y -%}{% set __fdpp_discarded = __fdpp_check(m) -%}\n x{% endfor %}"),
            (
                "{% with a = [1, 2], (b, c) = (3, f(d, e)) +%}\n{% endwith %}",
                "{% with a = [1, 2], (b, c) = (3, f(d, e)) +%}{% set __fdpp_discarded = __fdpp_check(a, b, c) +%}\n{% endwith %}",
            ),
            (
                "{% macro f(a, b=[1, 2], c={'k': d}) %}{% endmacro %}",
                "{% macro f(a, b=[1, 2], c={'k': d}) %}{% set __fdpp_discarded = __fdpp_check(a, b, c) %}{% endmacro %}",
            ),
            ("{%- do f(1) %}{% do x.y(2) -%}", "{%- set __fdpp_discarded = f(1) %}{% set __fdpp_discarded = x.y(2) -%}"),
            (
                "{% call(x, y=1) f() -%}{% endcall %}",
                "{% call(x, y=1) f() -%}{% set __fdpp_discarded = __fdpp_check(x, y) -%}{% endcall %}",
            ),
        ] {
            let expected = if expected.is_empty() { source } else { expected };
            assert_eq!(rewrite(source), expected);
        }
        // Unchanged where it does not tokenize, so that minijinja reports the error as written.
        assert_eq!(rewrite("{% set x = 'unterminated %}"), "{% set x = 'unterminated %}");
        let e = render("{% set x = %}", &[], false).unwrap_err().to_string();
        assert!(e.contains("syntax error") && !e.contains("__fdpp"), "{e}");
    }

    #[test]
    fn rewritten_templates_render_as_written() {
        for (source, expected) in [
            ("{% set a, b = 1, 2 %}{{ a }}-{{ b }}", "1-2"),
            ("{% set (a, b) = ['x', 'y'] %}{{ b }}{{ a }}", "yx"),
            ("{% set ns = namespace(v=1) %}{% set ns.v = ns.v + 1 %}{{ ns.v }}", "2"),
            ("a\n  {%- set x = 1 -%}\n  b{{ x }}", "ab1"),
            ("a\n  {% set x = 1 %}\nb{{ x }}", "a\nb1"),
            ("{% set x | upper %}a{{ 'b' }}{% endset %}{{ x }}{{ x | length }}", "AB2"),
            ("{% set l = namespace(x=1) %}{% set m = [l, l] %}{{ m[1].x }}", "1"),
            ("{% set u = undefined_name %}{{ u is defined }}", "False"),
            ("{% for x in [1, 2] %}\n  {{ x }}\n{% endfor %}", "  1\n  2\n"),
            ("{%- for x in [1, 2] -%}\n  {{ x }}\n{%- endfor %}", "12"),
            ("{% for x in [1, 2] +%}\n{{ x }}{% else %}none{% endfor %}{% for x in [] %}{% else %}none{% endfor %}", "\n1\n2none"),
            ("{% for x in [[1, [2]], [3]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}{% endfor %}", "123"),
            ("{% with a = 1, b = [2] %}\n  {{ a }}{{ b[0] }}\n{% endwith %}", "  12\n"),
            ("{% macro f(a, b=2) +%}\n{{ a }}{{ b }}{% endmacro %}{{ f(1) }}{{ f(b=3, a=4) }}", "\n12\n43"),
            ("{% macro f(a) %}[{{ caller(a) }}]{% endmacro %}{% call(x) f(2) %}\n  {{ x }}{% endcall %}", "[  2]"),
            ("a\n  {% do range(3) %}\nb{% do namespace(v=1) %}", "a\nb"),
        ] {
            assert_eq!(render(source, &[], false).unwrap(), expected, "{source}");
            assert_eq!(ChatTemplate::compile(source.into(), &tokenizer(), false).render(&[], false).unwrap(), expected, "{source}");
        }
    }

    #[test]
    fn errors_in_rewritten_sets_keep_their_line() {
        let e = render("a\n\n{% set x = [1,\n 2] %}{% set y = x.missing.deeper %}", &[], false).unwrap_err().to_string();
        assert!(e.contains("line 4"), "{e}");
        let deep = "a\n{% set ns = namespace(v=[]) %}\n{% for i in range(1000) %}{% set ns.v = [ns.v] %}{% endfor %}";
        let e = render(deep, &[], false).unwrap_err().to_string();
        assert!(e.contains("line 3 of the template"), "{e}");
    }

    #[track_caller]
    fn refused(source: &str, limit: &str) {
        let e = render(source, &[msg("user", "x")], true).unwrap_err().to_string();
        assert!(e.starts_with("chat template: ") && e.contains(limit), "{source}: {e}");
    }

    #[test]
    fn cyclic_deep_and_huge_stored_values_are_refused() {
        let depth = format!("fdpp's limit of {MAX_STORED_DEPTH} levels");
        let items = format!("fdpp's limit of {MAX_STORED_ITEMS} items");
        let bytes = format!("fdpp's limit of {MAX_STORED_BYTES} bytes");
        let held = "a namespace attribute may not hold a namespace or a loop object";
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/reproducers/chat_template");
        refused(&std::fs::read_to_string(root.join("namespace-cycle")).unwrap(), held);
        refused(&std::fs::read_to_string(root.join("namespace-deep-nesting")).unwrap(), &depth);
        refused(&"{% set x = [x] %}".repeat(100), &depth);
        refused(&format!("{{% set s = 'ab' %}}{}{{{{ s | length }}}}", "{% set s = s ~ s %}".repeat(40)), &bytes);
        refused(&format!("{{% set l = [1] %}}{}{{{{ l | length }}}}", "{% set l = l + l %}".repeat(40)), &items);
        refused("{% set s = 'x' * 1048576 %}{% set b %}{% for i in range(20) %}{{ s }}{% endfor %}{% endset %}", &bytes);
        // A namespace in a plain variable is fine; linking namespaces (or a namespace and a
        // loop, whose adjacent items change) is what could make cycles and chains.
        refused("{% set a = namespace() %}{% set b = namespace(x=a) %}{% set a.y = b %}{{ a }}", held);
        refused("{% set a = namespace() %}{% set a.v = [{'k': a}] %}", held);
        refused(
            "{% set h = namespace(cur=namespace()) %}{% for i in range(100000) %}{% set n = namespace() %}\
             {% set c = h.cur %}{% set c.v = n %}{% set h.cur = n %}{% endfor %}{{ h }}",
            held,
        );
        refused("{% set ns = namespace() %}{% for x in [1, ns, 3] %}{% if loop.first %}{% set ns.l = loop %}{% endif %}{% endfor %}", held);
        refused("{% set ns = namespace() %}{% set ns.v | default(ns, true) %}{% endset %}{{ ns }}", held);
        // Nesting built up through arguments and nested blocks across recursive calls.
        let with = (1..=10).fold("{{ f(v10, n - 1) }}".to_string(), |body, k| {
            let k = 11 - k;
            let previous = if k == 1 { "x".to_string() } else { format!("v{}", k - 1) };
            format!("{{% with v{k} = {}{previous}{} %}}{body}{{% endwith %}}", "[".repeat(60), "]".repeat(60))
        });
        let recursive = format!(
            "{{% macro f(x, n) %}}{{% if n > 0 %}}{with}{{% else %}}{{{{ x | tojson }}}}{{% endif %}}{{% endmacro %}}{{{{ f(0, 30) }}}}"
        );
        refused(&recursive, &depth);
        refused("{% macro f(x, n) %}{{ f([[[[[[[[[[x]]]]]]]]]], n - 1) if n else x }}{% endmacro %}{{ f(0, 90) }}", &depth);
        refused("{% for x in [0] recursive %}{{ loop([[[[[[[[[[[[[[[[x]]]]]]]]]]]]]]]]) }}{% endfor %}", &depth);
        let (open, close) = ("[".repeat(40), "]".repeat(40));
        refused(
            &format!(
                "{{% macro f(x) %}}{{{{ caller({open}x{close}) }}}}{{% endmacro %}}{{% call(v) f({open}0{close}) %}}{{{{ v }}}}{{% endcall %}}"
            ),
            &depth,
        );
        // Shared values count as often as minijinja's recursion visits them.
        refused(&format!("{{% set x = [1] %}}{}{{{{ x | length }}}}", "{% set x = [x, x] %}".repeat(30)), &items);
    }

    #[test]
    fn stored_values_up_to_the_limits_are_kept() {
        let nested = |n: usize| format!("{}0{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(render(&format!("{{% set x = {} %}}{{{{ x | length }}}}", nested(MAX_STORED_DEPTH)), &[], false).unwrap(), "1");
        let e = render(&format!("{{% set x = {} %}}", nested(MAX_STORED_DEPTH + 1)), &[], false).unwrap_err().to_string();
        assert!(e.contains(&format!("limit of {MAX_STORED_DEPTH} levels")), "{e}");
        let exactly = format!("{{% set s = 'x' * {MAX_STORED_BYTES} %}}{{{{ s | length }}}}");
        assert_eq!(render(&exactly, &[], false).unwrap(), MAX_STORED_BYTES.to_string());
        let over = format!("{{% set s = 'x' * {} %}}", MAX_STORED_BYTES + 1);
        assert!(render(&over, &[], false).unwrap_err().to_string().contains(&format!("limit of {MAX_STORED_BYTES} bytes")));
        // One item is the list itself.
        let list = |n: usize| format!("range({}) | list * 10 + range({}) | list", n / 10, n % 10);
        let n = MAX_STORED_ITEMS - 1;
        assert_eq!(render(&format!("{{% set l = {} %}}{{{{ l | length }}}}", list(n)), &[], false).unwrap(), n.to_string());
        let e = render(&format!("{{% set l = {} %}}", list(n + 1)), &[], false).unwrap_err().to_string();
        assert!(e.contains(&format!("limit of {MAX_STORED_ITEMS} items")), "{e}");
    }

    #[test]
    fn checking_stores_costs_fuel() {
        // 100,000 stores of a 100,000-item list: 10^10 items to walk without the charge.
        let start = std::time::Instant::now();
        let e = render("{% set big = range(100000) | list %}{% for i in range(100000) %}{% set x = big %}{% endfor %}", &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("limit of {MAX_TEMPLATE_FUEL} steps")), "{e}");
        assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
    }

    #[test]
    fn names_fdpp_reserves_are_refused() {
        for source in ["{% set __fdpp_bounded = 1 %}", "{{ __fdpp_x }}", "{% macro f(__fdpp_bounded_ns) %}{% endmacro %}"] {
            let e = ChatTemplate::new(source.into(), &tokenizer()).err().unwrap().to_string();
            assert!(e.contains("is a name fdpp reserves") && e.contains("line 1"), "{e}");
        }
    }

    #[test]
    fn the_mutable_object_types_are_found() {
        let types = mutable_object_types();
        assert_eq!(types.len(), 2, "{types:?}");
        assert!(types[0].contains("Namespace") && types[1].contains("Loop"), "{types:?}");
    }
}
