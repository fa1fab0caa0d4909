//! `fdpp tokenize` on llama.cpp's own tokenizer test vectors (vocabulary-only GGUF files):
//! the ids printed for every case are exactly the ones llama.cpp wrote to `.out`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer").join(name)
}

fn tokenize(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp")).arg("tokenize").args(args).output().unwrap();
    assert!(out.status.success(), "fdpp tokenize {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn llama_cpp_vectors_through_the_command_line() {
    for vocab in ["gpt-2", "llama-bpe", "llama-spm", "phi-3", "qwen2", "deepseek-llm", "deepseek-coder", "starcoder", "falcon"] {
        let (model, inp) = (data(&format!("ggml-vocab-{vocab}.gguf")), data(&format!("ggml-vocab-{vocab}.gguf.inp")));
        let got = tokenize(&["--model", model.to_str().unwrap(), "--cases", inp.to_str().unwrap()]);
        let want = std::fs::read_to_string(data(&format!("ggml-vocab-{vocab}.gguf.out"))).unwrap();
        assert_eq!(got.lines().count(), want.lines().count(), "{vocab}: case count");
        for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(g, w, "{vocab}: case {i}");
        }
    }
}

#[test]
fn text_and_ids_with_and_without_bos() {
    let model = data("ggml-vocab-llama-spm.gguf");
    let m = model.to_str().unwrap();
    // SentencePiece vocabularies put BOS in front of a prompt; --no-special leaves it out.
    assert_eq!(tokenize(&["--model", m, "--ids-only", "Hello world"]).trim(), "1 15043 3186");
    assert_eq!(tokenize(&["--model", m, "--ids-only", "--no-special", "Hello world"]).trim(), "15043 3186");
    let pieces = tokenize(&["--model", m, "Hello world"]);
    assert!(pieces.contains("15043 -> \"Hello\"") && pieces.contains("3186 -> \"world\""), "{pieces}");
}
