//! Text fidelity end to end: for generated token sequences, the text a
//! client reads equals Hugging Face `tokenizers` decoding all the tokens at
//! once (incomplete UTF-8 ends as U+FFFD, as it does there), or its prefix
//! up to the first stop string. Checked on both endpoints, streamed
//! (concatenated deltas, with the ids from `return_token_ids`) and not.
//!
//! tiny-llama's byte-level tokenizer over sim devices: the sim emits
//! pseudo-random byte tokens, so most sequences cut characters apart.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

/// Stop strings the generator picks from: ASCII, so the first match in the
/// streamed text is the first in the whole decode.
const STOPS: [&str; 5] = ["a", "e", " ", "q", "ab"];

/// One streamed response: the concatenated text deltas, the token ids and
/// the finish reason.
fn streamed(body: &str, chat: bool) -> (String, Vec<u32>, String) {
    let data = common::sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let (mut text, mut ids, mut finish) = (String::new(), Vec::new(), String::new());
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).expect("chunk JSON");
        let Some(choice) = v["choices"].get(0) else {
            continue; // the usage chunk
        };
        let delta = if chat {
            &choice["delta"]["content"]
        } else {
            &choice["text"]
        };
        text.push_str(delta.as_str().unwrap_or_default());
        if let Some(t) = choice["token_ids"].as_array() {
            ids.extend(t.iter().map(|t| t.as_u64().expect("id") as u32));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, ids, finish)
}

/// What the client should read: the whole decode, cut before the first stop string.
fn expected(decoded: &str, stop: Option<&str>) -> String {
    match stop.and_then(|s| decoded.find(s)) {
        Some(at) => decoded[..at].to_string(),
        None => decoded.to_string(),
    }
}

#[test]
fn streamed_and_whole_text_equal_decoding_all_tokens() {
    let root = common::root();
    let tiny = root.join("models/tiny");
    let config = common::sim_config(
        &[("h100-0", "h100-sxm")],
        "time_scale = 0.0",
        &format!(
            "[model]\nspec = \"tiny-llama\"\npath = {:?}\n",
            tiny.display().to_string()
        ),
    );
    let server = common::Server::start(&config);
    let reference = Tokenizer::from_file(tiny.join("tokenizer.json")).expect("tokenizer.json");

    let cases = std::env::var("SWITCHYARD_FIDELITY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig {
            cases,
            failure_persistence: None,
            max_shrink_iters: 64,
            ..RunnerConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = (
        prop::collection::vec(3u32..259, 1..12),
        1u32..40,
        any::<bool>(),
        prop::option::weighted(0.4, prop::sample::select(&STOPS[..])),
    );
    let stopped = std::cell::Cell::new(0u32);
    let replaced = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |(prompt, max_tokens, chat, stop)| {
            let (path, mut body) = if chat {
                // Each id as one byte of the message: any text, including broken UTF-8 (lossy).
                let bytes: Vec<u8> = prompt.iter().map(|&t| (t - 3) as u8).collect();
                let content = String::from_utf8_lossy(&bytes).into_owned();
                (
                    "/v1/chat/completions",
                    json!({"messages": [{"role": "user", "content": content}]}),
                )
            } else {
                ("/v1/completions", json!({"prompt": prompt}))
            };
            body["max_tokens"] = json!(max_tokens);
            body["temperature"] = json!(0);
            if let Some(s) = stop {
                body["stop"] = json!(s);
            }
            let mut streaming = body.clone();
            streaming["stream"] = json!(true);
            streaming["return_token_ids"] = json!(true);
            let (code, text) = server.post(path, &streaming);
            prop_assert_eq!(code, 200, "{}", text);
            let (streamed_text, ids, finish) = streamed(&text, chat);
            let decoded = reference.decode(&ids, true).expect("decode");
            let want = expected(&decoded, stop);
            prop_assert_eq!(&streamed_text, &want, "ids {:?} stop {:?}", ids, stop);
            if want.len() < decoded.len() {
                prop_assert_eq!(finish.as_str(), "stop");
                stopped.set(stopped.get() + 1);
            } else {
                prop_assert_eq!(ids.len() as u32, max_tokens);
            }
            replaced.set(replaced.get() + u32::from(want.contains('\u{FFFD}')));

            // The same request whole: the sim's tokens are a function of
            // the prompt, so the text must be the same.
            let (code, whole) = server.post(path, &body);
            prop_assert_eq!(code, 200, "{}", whole);
            let v: Value = serde_json::from_str(&whole).expect("JSON");
            let text = if chat {
                &v["choices"][0]["message"]["content"]
            } else {
                &v["choices"][0]["text"]
            };
            prop_assert_eq!(text.as_str().unwrap_or_default(), want.as_str());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // The cases exercised what they are for.
    assert!(stopped.get() > 0, "no case hit a stop string");
    assert!(
        replaced.get() > 0,
        "no case ended a broken character as U+FFFD"
    );
}
