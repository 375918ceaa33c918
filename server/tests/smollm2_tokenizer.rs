//! SmolLM2's converted `tokenizer.json` and chat template against
//! references built from the GGUF itself (`scripts/smollm2_reference.py`):
//! a byte-level BPE over the GGUF vocab and merges, and Jinja2 rendering of
//! the GGUF's chat template.
//!
//! `scripts/setup.sh` converts the model, so these tests run wherever setup
//! ran; they skip only when the directory is absent and setup has not run
//! (no `ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use switchyard_backends::fixtures::smollm2_dir;
use switchyard_backends::Tokenizer;
use switchyard_server::tokenizer::{render_chat, ChatMessage};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The converted tokenizer, or `None` (skip) while setup has not run.
fn tokenizer() -> Option<Tokenizer> {
    let dir = smollm2_dir("tokenizer.json")?;
    Some(Tokenizer::from_dir(&dir).expect("the converted tokenizer loads"))
}

/// `scripts/smollm2_reference.py WHAT INPUTS`, parsed.
fn reference(what: &str, inputs: &Value) -> Value {
    let out = Command::new("python3")
        .arg(root().join("scripts/smollm2_reference.py"))
        .args([what, &inputs.to_string()])
        .output()
        .expect("python3 runs (run `source scripts/setup.sh` first)");
    assert!(
        out.status.success(),
        "smollm2_reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const STRINGS: [&str; 10] = [
    "Hello, world! How are you today?",
    "  leading spaces, trailing spaces   ",
    "Numbers: 1234567890, 3.14159 and -42.",
    "fn main() {\n    println!(\"{}\", x + 1);\n}\n",
    "def f(x):\n\treturn x ** 2  # square",
    "机器学习是人工智能的一个分支。",
    "Emoji: 😀🚀👍🏽 and ❤️ and 🇫🇷",
    "MiXeD cAsE wOrDs and don't won't they're",
    "<|im_start|>user\nhi<|im_end|>\n",
    "tabs\tand\r\nnewlines\n\n\nend",
];

#[test]
fn encodes_like_a_bpe_built_from_the_gguf() {
    let Some(tok) = tokenizer() else { return };
    let want: Vec<Vec<u32>> =
        serde_json::from_value(reference("encode", &json!(STRINGS))["ids"].clone()).unwrap();
    for (s, w) in STRINGS.iter().zip(&want) {
        let got = tok.encode(s, true).unwrap();
        assert_eq!(&got, w, "{s:?}");
        // Byte-level BPE is lossless.
        assert_eq!(tok.decode(&got, false).unwrap(), *s);
    }
}

#[test]
fn chat_prompt_renders_like_jinja2_on_the_gguf_template() {
    let Some(tok) = tokenizer() else { return };
    let chats = json!([
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Name a colour."},
         {"role": "assistant", "content": "Blue."},
         {"role": "user", "content": "Another?"}],
    ]);
    let want: Vec<String> =
        serde_json::from_value(reference("chat", &chats)["prompts"].clone()).unwrap();
    for (chat, w) in chats.as_array().unwrap().iter().zip(&want) {
        let messages: Vec<ChatMessage> = serde_json::from_value(chat.clone()).unwrap();
        let got = render_chat(&tok, &messages).unwrap();
        assert_eq!(&got, w);
    }
    // The default system prompt applies when none is given, and the prompt's
    // markers are single special tokens.
    assert!(want[0].starts_with("<|im_start|>system\nYou are a helpful AI assistant"));
    let ids = tok.encode(&want[0], true).unwrap();
    assert_eq!(ids.first(), tok.token_to_id("<|im_start|>").as_ref());
    assert_eq!(tok.eos_token_ids(), &[2]);
}
