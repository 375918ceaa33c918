//! Log-probabilities in the OpenAI response shapes: the legacy completions
//! object (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`) and the
//! chat object (`content`: one entry per token with `bytes` and its
//! `top_logprobs`).
//!
//! A token's text is what the tokenizer decodes for that id alone, so a
//! byte-level token holding part of a UTF-8 character reads as U+FFFD, as
//! vLLM reports it.

use serde_json::{json, Map, Value};

use crate::generate::TokenLogprob;
use crate::tokenizer::TokenCodec;

/// What OpenAI sends for an impossible token: JSON has no −∞.
const IMPOSSIBLE: f64 = -9999.0;

fn finite(logprob: f32) -> f64 {
    if logprob.is_finite() {
        f64::from(logprob)
    } else {
        IMPOSSIBLE
    }
}

/// The completions `logprobs` object for `tokens`; `offset` is the character
/// offset of the first token's text in the choice's text, and advances past
/// the last one.
pub fn completion(tok: &dyn TokenCodec, tokens: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut texts = Vec::with_capacity(tokens.len());
    let mut token_logprobs = Vec::with_capacity(tokens.len());
    let mut top = Vec::with_capacity(tokens.len());
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        let text = tok.decode(&[t.token]);
        offsets.push(*offset);
        *offset += text.chars().count();
        let mut alternatives = Map::new();
        for &(id, lp) in &t.logprobs.top {
            alternatives
                .entry(tok.decode(&[id]))
                .or_insert(json!(finite(lp)));
        }
        // vLLM lists the sampled token among the alternatives even when it is not in the top k.
        alternatives
            .entry(text.clone())
            .or_insert(json!(finite(t.logprobs.logprob)));
        token_logprobs.push(json!(finite(t.logprobs.logprob)));
        top.push(Value::Object(alternatives));
        texts.push(Value::String(text));
    }
    json!({
        "tokens": texts,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// One chat `logprobs.content` entry's token fields.
fn chat_token(tok: &dyn TokenCodec, id: u32, logprob: f32) -> Map<String, Value> {
    let text = tok.decode(&[id]);
    let mut m = Map::new();
    m.insert("bytes".into(), json!(text.as_bytes()));
    m.insert("token".into(), Value::String(text));
    m.insert("logprob".into(), json!(finite(logprob)));
    m
}

/// The chat `logprobs` object for `tokens`.
pub fn chat(tok: &dyn TokenCodec, tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut entry = chat_token(tok, t.token, t.logprobs.logprob);
            let top: Vec<Value> = t
                .logprobs
                .top
                .iter()
                .map(|&(id, lp)| Value::Object(chat_token(tok, id, lp)))
                .collect();
            entry.insert("top_logprobs".into(), Value::Array(top));
            Value::Object(entry)
        })
        .collect();
    json!({ "content": content })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_backends::TokenLogprobs;

    /// Id `i` decodes to the letter `a + i`.
    struct Letters;
    impl TokenCodec for Letters {
        fn encode(&self, _: &str) -> Vec<u32> {
            Vec::new()
        }
        fn decode(&self, ids: &[u32]) -> String {
            ids.iter().map(|&i| char::from(b'a' + i as u8)).collect()
        }
    }

    fn lp(token: u32, logprob: f32, top: &[(u32, f32)]) -> TokenLogprob {
        TokenLogprob {
            token,
            logprobs: Box::new(TokenLogprobs {
                logprob,
                top: top.to_vec(),
            }),
        }
    }

    #[test]
    fn completion_shape_offsets_and_sampled_token_in_top() {
        let toks = [
            lp(0, -0.5, &[(0, -0.5), (1, -1.0)]),
            lp(2, f32::NEG_INFINITY, &[(1, -0.1)]),
        ];
        let mut offset = 3;
        let v = completion(&Letters, &toks, &mut offset);
        assert_eq!(v["tokens"], json!(["a", "c"]));
        assert_eq!(v["token_logprobs"], json!([-0.5, -9999.0]));
        assert_eq!(v["text_offset"], json!([3, 4]));
        assert_eq!(offset, 5);
        assert_eq!(v["top_logprobs"][0], json!({"a": -0.5, "b": -1.0}));
        assert_eq!(v["top_logprobs"][1]["c"], json!(-9999.0));
    }

    #[test]
    fn chat_shape_has_bytes_and_exactly_top_k() {
        let v = chat(&Letters, &[lp(1, -0.25, &[(1, -0.25), (3, -2.0)])]);
        let entry = &v["content"][0];
        assert_eq!(entry["token"], "b");
        assert_eq!(entry["bytes"], json!([98]));
        assert_eq!(entry["logprob"], json!(-0.25));
        assert_eq!(entry["top_logprobs"].as_array().map(Vec::len), Some(2));
        assert_eq!(entry["top_logprobs"][1]["token"], "d");
    }
}
