//! `fdpp tokenize`: a model's tokenizer from the command line (like llama.cpp's
//! llama-tokenize), on full models and on vocabulary-only GGUF files alike.

use std::io::Write;
use std::path::PathBuf;

use fdpp_runtime::model::Model;
use fdpp_runtime::{Error, Result};

#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// The text to tokenize (or give --file / --cases).
    #[arg(required_unless_present_any = ["file", "cases"])]
    text: Option<String>,
    /// Model file (.gguf, vocabulary-only ones too) or Hugging Face folder; the default
    /// model when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tokenize the contents of this file instead of TEXT.
    #[arg(long, conflicts_with_all = ["text", "cases"])]
    file: Option<PathBuf>,
    /// A llama.cpp tokenizer test input (`*.inp`: cases separated by lines
    /// `__ggml_vocab_test__`): print one line of ids per case, as its `*.out` has them.
    #[arg(long, conflicts_with = "text")]
    cases: Option<PathBuf>,
    /// Print only the ids, space-separated.
    #[arg(long)]
    ids_only: bool,
    /// Do not add the BOS/EOS tokens the model's tokenizer adds to a prompt.
    #[arg(long)]
    no_special: bool,
}

const CASE_SEPARATOR: &str = "\n__ggml_vocab_test__\n";

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let path = crate::resolve_model(args.model.as_deref())?;
    let t = Model::load_tokenizer(&path)?;
    let mut out = std::io::stdout().lock();
    let ids_line = |ids: &[u32]| ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
    if let Some(cases) = &args.cases {
        let text = read(cases)?;
        let body = text.strip_suffix(CASE_SEPARATOR).ok_or_else(|| Error::Malformed {
            path: cases.clone(),
            what: "tokenizer test input".into(),
            reason: "it does not end with a `__ggml_vocab_test__` line".into(),
        })?;
        // Each id after a space, as llama.cpp's test-tokenizer-0 writes its `.out` files.
        for case in body.split(CASE_SEPARATOR) {
            let line: String = t.encode(case, false)?.iter().map(|i| format!(" {i}")).collect();
            let _ = writeln!(out, "{line}");
        }
        return Ok(());
    }
    let text = match (&args.file, &args.text) {
        (Some(f), _) => read(f)?,
        (None, Some(t)) => t.clone(),
        (None, None) => unreachable!("clap requires one"),
    };
    let ids = t.encode(&text, !args.no_special)?;
    if args.ids_only {
        let _ = writeln!(out, "{}", ids_line(&ids));
    } else {
        for id in &ids {
            let piece = t.decode(&[*id], false)?;
            let _ = writeln!(out, "{id:>8} -> {piece:?}");
        }
        eprintln!("fdpp: {} tokens", ids.len());
    }
    Ok(())
}
