//! Text ↔ token ids for the HTTP layer, incremental detokenization for
//! streaming, and chat-template rendering.
//!
//! Real models bring their own Hugging Face tokenizer (wired by the backend
//! that loads them). A simulated fleet has no vocabulary, so
//! [`SyntheticTokenizer`] stands in: it splits text into words and
//! punctuation (roughly a BPE tokenizer's count for English) and renders
//! generated ids as pronounceable pseudo-words, so streams look like text.

use std::sync::Arc;

use minijinja::{context, Environment};
use serde::Serialize;
use switchyard_backends::hash::mix64;

/// What the HTTP layer needs from a tokenizer.
pub trait TokenCodec: Send + Sync {
    /// Token ids of `text` (no special tokens added).
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Text of `ids`; invalid UTF-8 pieces become U+FFFD.
    fn decode(&self, ids: &[u32]) -> String;
    /// The model's Hugging Face `chat_template`, if it has one.
    fn chat_template(&self) -> Option<&str> {
        None
    }
    /// Beginning-of-sequence token text, for templates.
    fn bos_token(&self) -> &str {
        ""
    }
    /// End-of-sequence token text, for templates.
    fn eos_token(&self) -> &str {
        ""
    }
}

/// A shared tokenizer.
pub type SharedTokenizer = Arc<dyn TokenCodec>;

/// A model's own Hugging Face tokenizer (`tokenizer.json` + `tokenizer_config.json`).
impl TokenCodec for switchyard_backends::Tokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        // Chat templates add BOS themselves; plain completions follow the
        // tokenizer's post-processor, as Hugging Face clients expect.
        switchyard_backends::Tokenizer::encode(self, text, true).unwrap_or_default()
    }

    fn decode(&self, ids: &[u32]) -> String {
        switchyard_backends::Tokenizer::decode(self, ids, true).unwrap_or_default()
    }

    fn chat_template(&self) -> Option<&str> {
        switchyard_backends::Tokenizer::chat_template(self)
    }

    fn bos_token(&self) -> &str {
        switchyard_backends::Tokenizer::bos_token(self).unwrap_or("")
    }

    fn eos_token(&self) -> &str {
        switchyard_backends::Tokenizer::eos_token(self).unwrap_or("")
    }
}

/// Stand-in tokenizer for simulated models (see module docs).
#[derive(Debug, Clone)]
pub struct SyntheticTokenizer {
    vocab: u32,
    reserved: u32,
}

impl SyntheticTokenizer {
    /// A tokenizer over `vocab` ids whose first `reserved` ids are specials.
    pub fn new(vocab: u32, reserved: u32) -> Self {
        Self {
            vocab: vocab.max(reserved + 1),
            reserved,
        }
    }

    fn piece_id(&self, piece: &str) -> u32 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in piece.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.reserved + (mix64(h) % u64::from(self.vocab - self.reserved)) as u32
    }
}

const ONSETS: [&str; 16] = [
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "th",
];
const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ou", "ee"];

impl TokenCodec for SyntheticTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut word = String::new();
        for c in text.chars() {
            if c.is_alphanumeric() {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                ids.push(self.piece_id(&word));
                word.clear();
            }
            if !c.is_whitespace() {
                ids.push(self.piece_id(c.encode_utf8(&mut [0; 4])));
            }
        }
        if !word.is_empty() {
            ids.push(self.piece_id(&word));
        }
        ids
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for &id in ids {
            if id < self.reserved {
                continue;
            }
            let h = mix64(u64::from(id));
            let syllables = 1 + (h % 3) as usize;
            out.push(' ');
            for k in 0..syllables {
                let bits = h >> (8 + 7 * k);
                out.push_str(ONSETS[(bits & 15) as usize]);
                out.push_str(VOWELS[((bits >> 4) & 7) as usize]);
            }
        }
        out
    }
}

/// Turns a growing list of token ids into text deltas, holding back bytes
/// of a UTF-8 character that is not complete yet.
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Adds a token; returns the new text it completes (may be empty).
    pub fn push(&mut self, tok: &dyn TokenCodec, id: u32) -> String {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset]);
        let full = tok.decode(&self.ids[self.prefix_offset..]);
        if full.ends_with('\u{FFFD}') || full.len() < prefix.len() {
            return String::new();
        }
        let delta = full.get(prefix.len()..).unwrap_or_default().to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        delta
    }

    /// Ends the sequence: the text still held back, where bytes of an
    /// incomplete character become U+FFFD as a whole-sequence `decode`
    /// writes them, so the deltas add up to `decode(all ids)`.
    pub fn finish(&mut self, tok: &dyn TokenCodec) -> String {
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset]);
        let full = tok.decode(&self.ids[self.prefix_offset..]);
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        full.get(prefix.len()..).unwrap_or_default().to_string()
    }
}

/// One chat message.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Message text.
    pub content: String,
}

/// Used when a model ships no `chat_template`: each message becomes
/// `<|role|>\ncontent\n`, then `<|assistant|>\n` opens the reply.
pub const FALLBACK_CHAT_TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// Why a chat template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct TemplateError(String);

/// Renders `messages` with the model's chat template (or the fallback).
pub fn render_chat(
    tok: &dyn TokenCodec,
    messages: &[ChatMessage],
) -> Result<String, TemplateError> {
    let source = tok.chat_template().unwrap_or(FALLBACK_CHAT_TEMPLATE);
    let mut env = Environment::new();
    env.add_template("chat", source)
        .map_err(|e| TemplateError(e.to_string()))?;
    let template = env
        .get_template("chat")
        .map_err(|e| TemplateError(e.to_string()))?;
    template
        .render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => tok.bos_token(),
            eos_token => tok.eos_token(),
        })
        .map_err(|e| TemplateError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_counts_words_and_punctuation() {
        let t = SyntheticTokenizer::new(1000, 3);
        let ids = t.encode("Hello, world! How are you?");
        assert_eq!(ids.len(), 8);
        assert!(ids.iter().all(|&i| (3..1000).contains(&i)));
        assert_eq!(ids, t.encode("Hello, world! How are you?"));
        assert_eq!(ids[0], t.encode("Hello")[0]);
    }

    #[test]
    fn synthetic_decodes_each_id_to_a_word() {
        let t = SyntheticTokenizer::new(1000, 3);
        let text = t.decode(&[10, 11, 12]);
        assert_eq!(text.split_whitespace().count(), 3);
        assert_eq!(t.decode(&[0, 1, 2]), "");
    }

    /// A byte-level tokenizer (ids 3.. are bytes), enough to test UTF-8 hold-back.
    struct Bytes;
    impl TokenCodec for Bytes {
        fn encode(&self, text: &str) -> Vec<u32> {
            text.bytes().map(|b| u32::from(b) + 3).collect()
        }
        fn decode(&self, ids: &[u32]) -> String {
            let bytes: Vec<u8> = ids
                .iter()
                .filter(|&&i| i >= 3)
                .map(|&i| (i - 3) as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    proptest::proptest! {
        /// Streamed deltas plus the final flush equal decoding every id at
        /// once, whatever the byte sequence (incomplete and invalid UTF-8
        /// included).
        #[test]
        fn deltas_add_up_to_the_whole_decode(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                0u8..128,
                0x80u8..=0xFF,
                proptest::sample::select(vec![0xE2u8, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xC3, 0xA9]),
            ], 0..40),
        ) {
            let ids: Vec<u32> = bytes.iter().map(|&b| u32::from(b) + 3).collect();
            let mut d = IncrementalDecoder::default();
            let mut text = String::new();
            for &id in &ids {
                text.push_str(&d.push(&Bytes, id));
            }
            text.push_str(&d.finish(&Bytes));
            proptest::prop_assert_eq!(text, Bytes.decode(&ids));
        }
    }

    #[test]
    fn incremental_decoder_holds_back_partial_utf8() {
        let mut d = IncrementalDecoder::default();
        let ids = Bytes.encode("aé€b");
        let deltas: Vec<String> = ids.iter().map(|&i| d.push(&Bytes, i)).collect();
        assert_eq!(deltas.concat(), "aé€b");
        // 'é' is two bytes: the first yields nothing.
        assert_eq!(deltas[1], "");
        assert_eq!(deltas[2], "é");
    }

    #[test]
    fn fallback_template_renders_roles() {
        let msgs = vec![
            ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "Hi".into(),
            },
        ];
        let text = render_chat(&Bytes, &msgs).unwrap();
        assert_eq!(text, "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n");
    }

    struct Templated;
    impl TokenCodec for Templated {
        fn encode(&self, _: &str) -> Vec<u32> {
            vec![]
        }
        fn decode(&self, _: &[u32]) -> String {
            String::new()
        }
        fn chat_template(&self) -> Option<&str> {
            Some("{{ bos_token }}{% for m in messages %}[{{ m.role|upper }}]{{ m.content }}{% endfor %}")
        }
        fn bos_token(&self) -> &str {
            "<s>"
        }
    }

    #[test]
    fn model_template_is_used_when_present() {
        let msgs = vec![ChatMessage {
            role: "user".into(),
            content: "x".into(),
        }];
        assert_eq!(render_chat(&Templated, &msgs).unwrap(), "<s>[USER]x");
    }
}
