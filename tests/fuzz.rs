//! Fuzzing: generated hostile inputs through the real parsers and
//! validators in-process, then through a live server over HTTP
//! (docs/fuzzing.md has the full-run command and measured counts).
//!
//! Inputs are structure-aware (valid shapes with hostile values, one field
//! spoiled at a time or several) plus raw bytes. The oracle: no panic, no
//! input slower than the hang limit, every accepted input consistent, and
//! every rejection an OpenAI-shaped 4xx that names the field at fault.
//!
//! Every target draws from a fixed seed, so a failure reproduces. Counts
//! come from the environment, small by default so `cargo test` runs all of
//! it in seconds:
//! - `SWITCHYARD_FUZZ_CASES`: inputs per in-process target (default 1000);
//! - `SWITCHYARD_FUZZ_HTTP`: requests to the live server (default 400);
//! - `SWITCHYARD_FUZZ_SEED`: another seed, to explore further;
//! - `SWITCHYARD_FUZZ_HANG_MS`: the per-input hang limit (default 2000).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};
use switchyard_backends::{CostModel, DeviceProfile, ModelSpec};
use switchyard_loadgen::fleet::{FleetSpec, MAX_FLEET_DEVICES};
use switchyard_loadgen::workload::trace::{parse_jsonl_trace, parse_timestamp, parse_trace};
use switchyard_loadgen::LoadgenError;
use switchyard_server::api::{self, ApiError, ChatRequest, CompletionRequest};
use switchyard_server::{admin, http as routes, state, Config, LiveFleet};

// ---------------------------------------------------------------- harness

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn cases() -> u32 {
    env_u64("SWITCHYARD_FUZZ_CASES", 1000).min(u64::from(u32::MAX)) as u32
}

/// Runs `check` on [`cases`] inputs of `strategy` under a hang watchdog;
/// returns how many ran. A failure is shrunk to a minimal input and reported.
fn fuzz<S>(target: &'static str, strategy: S, check: impl Fn(S::Value)) -> u64
where
    S: Strategy,
{
    let n = cases();
    let limit = Duration::from_millis(env_u64("SWITCHYARD_FUZZ_HANG_MS", 2000));
    let seed = env_u64("SWITCHYARD_FUZZ_SEED", 0x5717_c4ad) ^ fnv(target);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = RunnerConfig {
        cases: n,
        failure_persistence: None,
        max_shrink_iters: 4000,
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let epoch = Instant::now();
    let busy_since_ns = Arc::new(AtomicU64::new(0));
    let case = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let dog = {
        let (busy, case, done) = (busy_since_ns.clone(), case.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
                let since = busy.load(Ordering::Acquire);
                let now = epoch.elapsed().as_nanos() as u64;
                if since != 0 && now.saturating_sub(since) > limit.as_nanos() as u64 {
                    eprintln!(
                        "fuzz {target}: case {} ran past {limit:?}: a hang \
                         (the same seed reproduces it)",
                        case.load(Ordering::Acquire)
                    );
                    std::process::abort();
                }
            }
        })
    };
    let slowest = AtomicU64::new(0);
    let result = runner.run(&strategy, |input| {
        case.fetch_add(1, Ordering::AcqRel);
        let start = epoch.elapsed().as_nanos() as u64 | 1;
        busy_since_ns.store(start, Ordering::Release);
        check(input);
        busy_since_ns.store(0, Ordering::Release);
        slowest.fetch_max(
            (epoch.elapsed().as_nanos() as u64).saturating_sub(start),
            Ordering::Relaxed,
        );
        Ok(())
    });
    busy_since_ns.store(0, Ordering::Release);
    done.store(true, Ordering::Release);
    let _ = dog.join();
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
    println!(
        "fuzz {target}: {n} inputs in {:.2} s, slowest {:.2} ms",
        epoch.elapsed().as_secs_f64(),
        slowest.load(Ordering::Relaxed) as f64 / 1e6
    );
    u64::from(n)
}

/// FNV-1a, to give each target its own stream of inputs.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------- hostile values

/// Strings that have broken parsers, tokenizers and templates before.
const NASTY: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "1e400",
    "NaN",
    "inf",
    "true",
    "null",
    "\0",
    "\u{feff}",
    "\u{202e}rtl",
    "\\",
    "\"",
    "'",
    "\r\n",
    "\u{10ffff}",
    "𝕏𝕐",
    "é\u{301}",
    "{{ 7*7 }}",
    "{% for x in range(99999999) %}x{% endfor %}",
    "{{ raise_exception('boom') }}",
    "{{ messages }}",
    "{#",
    "</s>",
    "<s>",
    "<pad>",
    "<|assistant|>",
    "<|endoftext|>",
    "Bearer",
    "Bearer ",
    "tiny-llama",
    "llama-3.1-8b",
    "%00",
    "%FF",
    "../../etc/passwd",
    "a=b&c=d",
];

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NASTY).prop_map(String::from),
        2 => any::<String>(),
        2 => "[ -~]{0,40}",
        1 => ("[a-z ]{1,6}", 1usize..400).prop_map(|(w, n)| w.repeat(n)),
        1 => prop::collection::vec(prop::sample::select(NASTY), 1..6).prop_map(|v| v.concat()),
    ]
}

fn hostile_int() -> impl Strategy<Value = i128> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0i128, 1, -1, 2, 16, 255, 256, 258, 259, 511, 512, 513, 65536,
            i128::from(i32::MIN), i128::from(i32::MAX), i128::from(u32::MAX),
            i128::from(u32::MAX) + 1, i128::from(i64::MAX), i128::from(i64::MIN),
            i128::from(u64::MAX),
        ]),
        1 => any::<i64>().prop_map(i128::from),
    ]
}

fn hostile_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0.0, -0.0, 0.5, 1.0, 1.000_000_1, 2.0, 2.000_000_1, -1.0, 1e-320, 1e-45,
            3.4e38, 3.5e38, 1e308, -1e308, f64::EPSILON, f64::MIN_POSITIVE,
        ]),
        1 => any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()),
    ]
}

fn json_int(i: i128) -> Value {
    if let Ok(v) = i64::try_from(i) {
        json!(v)
    } else if let Ok(v) = u64::try_from(i) {
        json!(v)
    } else {
        json!(i as f64)
    }
}

fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        hostile_int().prop_map(json_int),
        hostile_float().prop_map(|f| json!(f)),
        hostile_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------- request bodies

/// The fields both request kinds share, each with values the server must accept.
fn common_fields(model: &'static str, vocab: u32) -> Vec<(&'static str, BoxedStrategy<Value>)> {
    let word = "[a-z]{1,6}";
    vec![
        ("model", Just(json!(model)).boxed()),
        ("max_tokens", (1u32..=12).prop_map(Value::from).boxed()),
        (
            "max_completion_tokens",
            (1u32..=12).prop_map(Value::from).boxed(),
        ),
        ("temperature", (0.0f64..=2.0).prop_map(|f| json!(f)).boxed()),
        ("top_p", (0.01f64..=1.0).prop_map(|f| json!(f)).boxed()),
        ("top_k", (-1i64..=50).prop_map(Value::from).boxed()),
        ("seed", any::<u64>().prop_map(Value::from).boxed()),
        (
            "stop",
            prop_oneof![
                word.prop_map(Value::from),
                prop::collection::vec(word, 0..4).prop_map(|v| json!(v)),
            ]
            .boxed(),
        ),
        (
            "stop_token_ids",
            prop::collection::vec(0..vocab, 0..4)
                .prop_map(|v| json!(v))
                .boxed(),
        ),
        ("stream", any::<bool>().prop_map(Value::from).boxed()),
        (
            "stream_options",
            any::<bool>()
                .prop_map(|b| json!({"include_usage": b}))
                .boxed(),
        ),
        ("ignore_eos", any::<bool>().prop_map(Value::from).boxed()),
        ("n", (1u32..=4).prop_map(Value::from).boxed()),
        (
            "logprobs",
            prop_oneof![
                Just(Value::Null),
                Just(json!(false)),
                Just(json!(true)),
                (0u8..=20).prop_map(Value::from),
            ]
            .boxed(),
        ),
        ("top_logprobs", Just(json!(0)).boxed()),
        ("best_of", Just(json!(1)).boxed()),
        (
            "return_token_ids",
            any::<bool>().prop_map(Value::from).boxed(),
        ),
    ]
}

fn prompt_value(vocab: u32) -> BoxedStrategy<Value> {
    let text = "[a-z]{1,8}( [a-z]{1,8}){0,6}";
    prop_oneof![
        text.prop_map(Value::from),
        prop::collection::vec(0..vocab, 1..24).prop_map(|v| json!(v)),
        text.prop_map(|t| json!([t])),
        prop::collection::vec(0..vocab, 1..24).prop_map(|v| json!([v])),
    ]
    .boxed()
}

fn messages_value() -> BoxedStrategy<Value> {
    let text = prop_oneof![
        3 => "[ -~]{0,40}",
        1 => hostile_string(),
    ];
    let content = prop_oneof![
        text.clone().prop_map(Value::from),
        prop::collection::vec(text.clone(), 1..3).prop_map(|parts| {
            Value::Array(
                parts
                    .into_iter()
                    .map(|t| json!({"type": "text", "text": t}))
                    .collect(),
            )
        }),
        Just(Value::Null),
    ];
    let role = prop::sample::select(vec!["system", "user", "assistant", "tool"]);
    prop::collection::vec((role, content), 1..5)
        .prop_map(|m| {
            Value::Array(
                m.into_iter()
                    .map(|(role, content)| json!({"role": role, "content": content}))
                    .collect(),
            )
        })
        .boxed()
}

/// Keys the server does not read; they must be ignored whatever they hold.
const UNREAD_KEYS: &[&str] = &[
    "user",
    "metadata",
    "logit_bias",
    "frequency_penalty",
    "presence_penalty",
    "tools",
    "response_format",
    "suffix",
    "x_fuzz",
];

/// A body built from `fields`: each absent, valid or hostile, plus unread
/// keys. Returns the body and the fields given hostile values (a required
/// field left out counts as hostile).
fn body_strategy(
    fields: Vec<(&'static str, BoxedStrategy<Value>, bool)>,
) -> impl Strategy<Value = (Map<String, Value>, Vec<&'static str>)> {
    let per_field: Vec<_> = fields
        .into_iter()
        .map(|(name, valid, required)| {
            let (absent, good, bad) = if required { (2, 90, 8) } else { (55, 35, 10) };
            prop_oneof![
                absent => Just(None),
                good => valid.prop_map(|v| Some((v, false))),
                bad => hostile_json().prop_map(|v| Some((v, true))),
            ]
            .prop_map(move |o| (name, required, o))
        })
        .collect();
    let unread = prop::collection::vec((prop::sample::select(UNREAD_KEYS), hostile_json()), 0..3);
    (per_field, unread).prop_map(|(fields, unread)| {
        let mut body = Map::new();
        let mut hostile = Vec::new();
        for (k, v) in unread {
            body.insert(k.to_string(), v);
        }
        for (name, required, o) in fields {
            match o {
                None if required => hostile.push(name),
                None => {}
                Some((v, bad)) => {
                    if bad {
                        hostile.push(name);
                    }
                    body.insert(name.to_string(), v);
                }
            }
        }
        (body, hostile)
    })
}

/// A body of the common fields plus `own`, the endpoint's own fields
/// (`(name, values, required)`).
fn endpoint_body(
    model: &'static str,
    vocab: u32,
    own: Vec<(&'static str, BoxedStrategy<Value>, bool)>,
) -> impl Strategy<Value = (Map<String, Value>, Vec<&'static str>)> {
    let mut fields: Vec<_> = common_fields(model, vocab)
        .into_iter()
        .map(|(n, s)| (n, s, false))
        .collect();
    fields.extend(own);
    body_strategy(fields)
}

fn completion_body(
    model: &'static str,
    vocab: u32,
) -> impl Strategy<Value = (Map<String, Value>, Vec<&'static str>)> {
    endpoint_body(
        model,
        vocab,
        vec![
            ("prompt", prompt_value(vocab), true),
            ("echo", Just(json!(false)).boxed(), false),
        ],
    )
}

fn chat_body(
    model: &'static str,
    vocab: u32,
) -> impl Strategy<Value = (Map<String, Value>, Vec<&'static str>)> {
    endpoint_body(model, vocab, vec![("messages", messages_value(), true)])
}

/// Bytes near a valid body: byte edits, truncations, token soup, deep nesting.
fn raw_bytes(valid: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let soup = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"prompt\"",
        "\"messages\"",
        "\"role\"",
        "\"content\"",
        "\"max_tokens\"",
        "1",
        "-1",
        "1e999",
        "-0",
        "null",
        "\"x\"",
        "true",
        " ",
        "\\u0000",
        "\"\\ud800\"",
        "\"\\u00e9\"",
        "0.5e-400",
    ]);
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300),
        1 => "[ -~\n\t]{0,200}".prop_map(String::into_bytes),
        4 => (valid, prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..6))
            .prop_map(|(mut b, edits)| {
                for (at, byte, op) in edits {
                    let i = if b.is_empty() { 0 } else { at.index(b.len()) };
                    match op {
                        0 if !b.is_empty() => b[i] = byte,
                        1 => b.insert(i, byte),
                        2 if !b.is_empty() => {
                            b.remove(i);
                        }
                        _ => b.truncate(i),
                    }
                }
                b
            }),
        2 => prop::collection::vec(soup, 0..40).prop_map(|v| v.concat().into_bytes()),
        1 => (1usize..400, prop::sample::select(vec!["[", "{\"prompt\":"]))
            .prop_map(|(d, open)| format!("{{\"prompt\": {}1", open.repeat(d)).into_bytes()),
    ]
}

// ---------------------------------------------------------------- oracles

/// The error body has OpenAI's shape and a 4xx status.
fn assert_openai_4xx(status: u16, body: &Value, context: &dyn std::fmt::Debug) {
    assert!(
        (400..500).contains(&status),
        "status {status} for {context:?}: {body}"
    );
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message for {context:?}: {body}"
    );
    assert!(e["type"].is_string(), "no type for {context:?}: {body}");
    assert!(
        e["param"].is_string() || e["param"].is_null(),
        "{context:?}: {body}"
    );
    assert!(
        e["code"].is_string() || e["code"].is_null(),
        "{context:?}: {body}"
    );
    assert_eq!(
        e.as_object().map(Map::len),
        Some(4),
        "extra keys for {context:?}: {body}"
    );
}

/// A rejection of a request body names one of `allowed` (the structured
/// generator's hostile fields, or the keys a raw body holds).
fn assert_names_field(err: &ApiError, allowed: &[&str], context: &dyn std::fmt::Debug) {
    assert_openai_4xx(err.status.as_u16(), &err.body(), context);
    let param = err
        .param
        .unwrap_or_else(|| panic!("rejection names no field for {context:?}: {err:?}"));
    assert!(
        allowed.contains(&param),
        "rejection names `{param}`, not one of {allowed:?}, for {context:?}: {err:?}"
    );
}

fn raw_rejection_ok(bytes: &[u8], err: &ApiError, required: &'static str) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => {
            let mut allowed: Vec<&str> = m.keys().map(String::as_str).collect();
            allowed.push(required);
            assert_names_field(err, &allowed, &String::from_utf8_lossy(bytes));
        }
        // Not a JSON object: there is no field to name.
        _ => assert_openai_4xx(
            err.status.as_u16(),
            &err.body(),
            &String::from_utf8_lossy(bytes),
        ),
    }
}

// ---------------------------------------------------------------- in-process fleets

struct Fleets {
    /// tiny-llama with its Hugging Face tokenizer and chat template.
    tiny: Arc<LiveFleet>,
    /// llama-3.1-8b with the synthetic tokenizer and the fallback template.
    synthetic: Arc<LiveFleet>,
}

fn fleet_config(model: &str, path: Option<&Path>) -> Config {
    let root = common::root();
    let mut text = format!(
        "profiles_dir = {:?}\n[model]\nspec = {model:?}\n",
        root.join("profiles").display().to_string()
    );
    if let Some(p) = path {
        text.push_str(&format!("path = {:?}\n", p.display().to_string()));
    }
    for (id, profile) in [("l4-0", "l4"), ("h100-0", "h100-sxm")] {
        text.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nbackend = \"sim\"\nprofile = \"{profile}\"\ntime_scale = 0.0\n"
        ));
    }
    Config::from_toml(&root.join("fuzz.toml"), &text).expect("fuzz fleet config")
}

fn fleets() -> &'static Fleets {
    static FLEETS: OnceLock<Fleets> = OnceLock::new();
    FLEETS.get_or_init(|| {
        let tiny_dir = common::root().join("models/tiny");
        Fleets {
            tiny: LiveFleet::start(&fleet_config("tiny-llama", Some(&tiny_dir))).expect("tiny"),
            synthetic: LiveFleet::start(&fleet_config("llama-3.1-8b", None)).expect("synthetic"),
        }
    })
}

/// Totals per target, printed by the test that runs them.
fn report(name: &str, counts: &[(&str, u64)]) {
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let per: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
    println!("fuzz {name}: {total} inputs in all ({})", per.join(", "));
}

// ---------------------------------------------------------------- request targets

fn completion_target(fleet: &Arc<LiveFleet>, bytes: &[u8]) -> Result<(), ApiError> {
    let req: CompletionRequest = api::parse_json_body(bytes)?;
    let (prompt, settings) = routes::completion_prompt(fleet, req)?;
    assert!(!prompt.is_empty());
    assert!(prompt.iter().all(|&t| t < fleet.model().vocab_size));
    assert!(settings.max_tokens != Some(0));
    Ok(())
}

fn chat_target(fleet: &Arc<LiveFleet>, bytes: &[u8]) -> Result<(), ApiError> {
    let req: ChatRequest = api::parse_json_body(bytes)?;
    let (prompt, settings) = routes::chat_prompt(fleet, req)?;
    assert!(prompt.iter().all(|&t| t < fleet.model().vocab_size));
    assert!(settings.max_tokens != Some(0));
    Ok(())
}

fn structured_check(
    result: Result<(), ApiError>,
    body: &Map<String, Value>,
    hostile: &[&'static str],
) {
    match result {
        Ok(()) => {}
        Err(e) => {
            assert!(!hostile.is_empty(), "valid body rejected: {body:?}: {e:?}");
            assert_names_field(&e, hostile, body);
        }
    }
}

#[test]
fn fuzz_request_bodies() {
    let f = fleets();
    let pick = |tiny: bool| if tiny { &f.tiny } else { &f.synthetic };
    let model = |tiny: bool| if tiny { "tiny-llama" } else { "llama-3.1-8b" };
    let mut counts = Vec::new();
    for tiny in [true, false] {
        let fleet = pick(tiny);
        let vocab = fleet.model().vocab_size;
        let name = if tiny {
            "completions/tiny"
        } else {
            "completions/synthetic"
        };
        counts.push((
            name,
            fuzz(
                name,
                completion_body(model(tiny), vocab),
                |(body, hostile)| {
                    let bytes = serde_json::to_vec(&body).expect("serialise");
                    structured_check(completion_target(fleet, &bytes), &body, &hostile);
                },
            ),
        ));
        let name = if tiny { "chat/tiny" } else { "chat/synthetic" };
        counts.push((
            name,
            fuzz(name, chat_body(model(tiny), vocab), |(body, hostile)| {
                let bytes = serde_json::to_vec(&body).expect("serialise");
                structured_check(chat_target(fleet, &bytes), &body, &hostile);
            }),
        ));
    }
    let valid_completion = completion_body("tiny-llama", 259)
        .prop_map(|(b, _)| serde_json::to_vec(&b).unwrap_or_default())
        .boxed();
    counts.push((
        "completions/raw",
        fuzz("completions/raw", raw_bytes(valid_completion), |bytes| {
            if let Err(e) = completion_target(&f.tiny, &bytes) {
                raw_rejection_ok(&bytes, &e, "prompt");
            }
        }),
    ));
    let valid_chat = chat_body("tiny-llama", 259)
        .prop_map(|(b, _)| serde_json::to_vec(&b).unwrap_or_default())
        .boxed();
    counts.push((
        "chat/raw",
        fuzz("chat/raw", raw_bytes(valid_chat), |bytes| {
            if let Err(e) = chat_target(&f.tiny, &bytes) {
                raw_rejection_ok(&bytes, &e, "messages");
            }
        }),
    ));
    report("request bodies", &counts);
}

// ---------------------------------------------------------------- headers and queries

fn header_bytes(keys: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let key = if keys.is_empty() {
        Just(String::from("k")).boxed()
    } else {
        prop::sample::select(keys).boxed()
    };
    prop_oneof![
        2 => key.clone().prop_map(|k| format!("Bearer {k}").into_bytes()),
        2 => (key.clone(), "[ \t]{0,3}", "[ \t]{0,3}", prop::sample::select(vec!["Bearer ", "bearer ", "Bearer", "Basic ", "Bearer  ", "", "Token "]))
            .prop_map(|(k, a, b, scheme)| format!("{scheme}{a}{k}{b}").into_bytes()),
        1 => (key, prop::collection::vec((any::<Index>(), any::<u8>()), 1..3)).prop_map(|(k, edits)| {
            let mut b = format!("Bearer {k}").into_bytes();
            for (at, byte) in edits {
                let i = at.index(b.len());
                b[i] = byte;
            }
            b
        }),
        2 => prop::collection::vec(any::<u8>(), 0..48),
        1 => hostile_string().prop_map(|s| format!("Bearer {s}").into_bytes()),
    ]
}

/// What `Authorization` values should pass: `Bearer KEY` in visible ASCII.
fn expect_authorized(keys: &[String], first: Option<&[u8]>) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(v) = first else { return false };
    if !v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return false;
    }
    let s = std::str::from_utf8(v).unwrap_or_default();
    s.strip_prefix("Bearer ")
        .map(str::trim)
        .is_some_and(|k| keys.iter().any(|x| x == k))
}

#[test]
fn fuzz_headers_and_queries() {
    let mut counts = Vec::new();
    let auth = prop::collection::vec(prop_oneof![3 => "[!-~]{1,24}", 1 => "[ -~]{0,24}"], 0..3)
        .prop_flat_map(|keys| {
            let headers = prop::collection::vec(header_bytes(keys.clone()), 0..3);
            (Just(keys), headers)
        });
    counts.push((
        "authorization",
        fuzz("authorization", auth, |(keys, values)| {
            let mut headers = HeaderMap::new();
            let mut sent: Vec<Vec<u8>> = Vec::new();
            for v in &values {
                // Bytes HTTP cannot carry in a header never reach the server.
                if let Ok(hv) = HeaderValue::from_bytes(v) {
                    headers.append(http::header::AUTHORIZATION, hv);
                    sent.push(v.clone());
                }
            }
            let want = expect_authorized(&keys, sent.first().map(Vec::as_slice));
            match state::authorize(&keys, &headers) {
                Ok(()) => assert!(want, "accepted {sent:?} against {keys:?}"),
                Err(e) => {
                    assert!(!want, "refused {sent:?} against {keys:?}");
                    assert_eq!(e.status.as_u16(), 401);
                    assert_openai_4xx(401, &e.body(), &sent);
                    assert!(e.message.contains("Authorization"), "{e:?}");
                }
            }
        }),
    ));
    let value = prop_oneof![
        3 => hostile_int().prop_map(|i| i.to_string()),
        2 => prop::sample::select(vec![
            "", "-0", "+1", "1.0", "1e3", "0x10", " 1", "1 ", "%31", "%FF", "%", "%%", "1%00",
            "4294967295", "4294967296", "007", "١٢", "1+1", "&", "=",
        ]).prop_map(String::from),
        1 => hostile_string(),
    ];
    let key = prop::sample::select(vec![
        "prompt_tokens",
        "max_tokens",
        "prompt_tokens",
        "max_tokens",
        "prompt%5Ftokens",
        "max_tokens[]",
        "PROMPT_TOKENS",
        "",
        "x",
    ]);
    let query = prop_oneof![
        1 => Just(None),
        1 => any::<String>().prop_map(Some),
        4 => prop::collection::vec((key, value, any::<bool>()), 0..5).prop_map(|kv| {
            let parts: Vec<String> = kv
                .into_iter()
                .map(|(k, v, eq)| if eq { format!("{k}={v}") } else { k.to_string() + &v })
                .collect();
            Some(parts.join("&"))
        }),
    ];
    let fleet = &fleets().synthetic;
    counts.push((
        "admin_route_query",
        fuzz(
            "admin_route_query",
            query,
            |q| match admin::parse_route_query(q.as_deref()) {
                Ok(r) => match fleet.explain(r.prompt_tokens, r.max_tokens) {
                    Ok(d) => assert!(d.scores.iter().any(|s| s.device == d.device), "{q:?}"),
                    Err(e) => {
                        let e = api::route_error(e);
                        assert_names_field(&e, &["prompt"], &q);
                    }
                },
                Err(e) => {
                    assert_names_field(&e, &["prompt_tokens", "max_tokens"], &q);
                    assert!(e.message.contains(e.param.unwrap_or_default()), "{e:?}");
                }
            },
        ),
    ));
    report("headers and queries", &counts);
}

// ---------------------------------------------------------------- TOML files

fn hostile_toml() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(toml::Value::Boolean),
        hostile_int()
            .prop_filter_map("TOML integers are i64", |i| i64::try_from(i).ok())
            .prop_map(toml::Value::Integer),
        prop_oneof![
            hostile_float(),
            prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY])
        ]
        .prop_map(toml::Value::Float),
        hostile_string().prop_map(toml::Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::vec(("[a-z_]{1,10}", inner), 0..3)
                .prop_map(|kv| toml::Value::Table(kv.into_iter().collect())),
        ]
    })
}

/// One edit of a parsed document: the key it touched, and whether the
/// edit gave that key a value (so an error must name it).
#[derive(Debug, Clone)]
enum Edit {
    Replace(Vec<Index>, toml::Value),
    Delete(Vec<Index>),
    Insert(Vec<Index>, String, toml::Value),
}

/// Follows `path` (an index per level) into `doc`, down tables and arrays.
fn pick_slot<'a>(
    doc: &'a mut toml::Table,
    path: &[Index],
) -> Option<(&'a mut toml::Table, String)> {
    let keys: Vec<String> = doc.keys().cloned().collect();
    let (first, rest) = path.split_first()?;
    if keys.is_empty() {
        return None;
    }
    let key = keys[first.index(keys.len())].clone();
    let descend = !rest.is_empty()
        && match doc.get(&key) {
            Some(toml::Value::Table(_)) => true,
            Some(toml::Value::Array(a)) => a.iter().any(toml::Value::is_table),
            _ => false,
        };
    if !descend {
        return Some((doc, key));
    }
    match doc.get_mut(&key) {
        Some(toml::Value::Table(t)) => pick_slot(t, rest),
        Some(toml::Value::Array(a)) => {
            let (i, rest) = rest.split_first()?;
            let n = a.len();
            match a.get_mut(i.index(n.max(1)).min(n.saturating_sub(1))) {
                Some(toml::Value::Table(t)) => pick_slot(t, rest),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Applies `edits` to `doc`; returns the keys that were given values.
fn apply_edits(doc: &mut toml::Table, edits: Vec<Edit>) -> Vec<String> {
    let mut named = Vec::new();
    for edit in edits {
        match edit {
            Edit::Replace(path, v) => {
                if let Some((t, k)) = pick_slot(doc, &path) {
                    // A table put in a key's place is reported by its own keys.
                    let nested = match &v {
                        toml::Value::Table(_) => true,
                        toml::Value::Array(a) => a.iter().any(toml::Value::is_table),
                        _ => false,
                    };
                    t.insert(k.clone(), v);
                    if !nested {
                        named.push(k);
                    }
                }
            }
            Edit::Delete(path) => {
                if let Some((t, k)) = pick_slot(doc, &path) {
                    t.remove(&k);
                }
            }
            Edit::Insert(path, key, v) => {
                let t = match pick_slot(doc, &path) {
                    Some((t, _)) => t,
                    None => doc,
                };
                if t.insert(key.clone(), v).is_none() {
                    named.push(key);
                }
            }
        }
    }
    named
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let path = prop::collection::vec(any::<Index>(), 1..5);
    prop_oneof![
        5 => (path.clone(), hostile_toml()).prop_map(|(p, v)| Edit::Replace(p, v)),
        2 => path.clone().prop_map(Edit::Delete),
        1 => (path, "[a-z_]{1,12}", hostile_toml()).prop_map(|(p, k, v)| Edit::Insert(p, k, v)),
    ]
}

/// A TOML document built from one of `seeds`: parsed and edited (with the
/// keys given values), or its text damaged character by character.
#[derive(Debug, Clone)]
struct TomlCase {
    seed: usize,
    text: String,
    named: Vec<String>,
}

fn toml_cases(seeds: Arc<Vec<(PathBuf, String)>>) -> impl Strategy<Value = TomlCase> {
    let n = seeds.len();
    let s1 = seeds.clone();
    let edited =
        (0..n, prop::collection::vec(edit_strategy(), 1..3)).prop_map(move |(i, edits)| {
            let mut doc: toml::Table = toml::from_str(&s1[i].1).expect("seed parses");
            let named = if edits.len() == 1 {
                apply_edits(&mut doc, edits)
            } else {
                // Several edits: any of them may be the one reported.
                apply_edits(&mut doc, edits);
                Vec::new()
            };
            let text = toml::to_string(&doc).unwrap_or_default();
            TomlCase {
                seed: i,
                text,
                named,
            }
        });
    let s2 = seeds.clone();
    let damaged = (
        0..n,
        prop::collection::vec((any::<Index>(), any::<char>(), 0u8..3), 1..5),
    )
        .prop_map(move |(i, edits)| {
            let mut chars: Vec<char> = s2[i].1.chars().collect();
            for (at, c, op) in edits {
                let k = if chars.is_empty() {
                    0
                } else {
                    at.index(chars.len())
                };
                match op {
                    0 if !chars.is_empty() => chars[k] = c,
                    1 => chars.insert(k, c),
                    _ => chars.truncate(k),
                }
            }
            TomlCase {
                seed: i,
                text: chars.into_iter().collect(),
                named: Vec::new(),
            }
        });
    let random = (0..n, "[ -~\n]{0,200}").prop_map(|(i, text)| TomlCase {
        seed: i,
        text,
        named: Vec::new(),
    });
    prop_oneof![6 => edited, 3 => damaged, 1 => random]
}

/// A rejection names the file and, after a single edit, the key it touched.
fn assert_toml_error(case: &TomlCase, path: &Path, err: &str) {
    assert!(
        err.contains(&path.display().to_string()),
        "error does not name the file: {err}\n{case:?}"
    );
    if let Some(key) = case.named.first() {
        // Inside a tagged table (`[attention]`) serde reports the table, not the key.
        assert!(
            err.contains(key.as_str()) || err.contains("`["),
            "error does not name `{key}`: {err}\n--- document ---\n{}",
            case.text
        );
    }
}

fn read_seeds(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .expect("seed dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("seed");
            (p, text)
        })
        .collect();
    out.sort();
    out
}

fn cost_checks(cm: &CostModel) {
    let _ = cm.kv_blocks(16, 64, 512);
    let _ = cm.prefill_time(512, 0);
    let _ = cm.prefill_time(u32::MAX, u32::MAX);
    let _ = cm.decode_step_time(8, 4096);
    let _ = cm.decode_step_time(u32::MAX, u64::MAX);
    let _ = cm.block_bytes(u32::MAX);
    let _ = cm.usd_per_second();
}

#[test]
fn fuzz_config_and_profile_files() {
    let root = common::root();
    let mut counts = Vec::new();

    // switchyard.toml: the committed one and test-style sim and tier configs.
    let sim = common::sim_config(
        &[("l4-0", "l4"), ("h100-0", "h100-sxm")],
        "time_scale = 0.0\nkv_blocks = 64",
        "[server]\napi_keys = [\"k\"]\nmax_body_bytes = 20000\n[router]\npolicy = \"cost\"\n\
         [router.slo]\nttft_ms = 500\ntpot_ms = 50\npercentile = 0.9\n[engine]\nblock_size = 16\n",
    );
    let tier = format!(
        "profiles_dir = {:?}\n[model]\nspec = \"llama-3.1-8b\"\n[[endpoints]]\nid = \"a\"\n\
         url = \"http://127.0.0.1:9\"\nengine = \"vllm\"\nprofile = \"l4\"\n\
         [tier]\nbreaker_failures = 3\n[autoscale]\nenabled = false\n",
        root.join("profiles").display().to_string()
    );
    let config_seeds = Arc::new(vec![
        (
            root.join("switchyard.toml"),
            std::fs::read_to_string(root.join("switchyard.toml")).expect("switchyard.toml"),
        ),
        (root.join("sim.toml"), sim),
        (root.join("tier.toml"), tier),
    ]);
    for (path, text) in config_seeds.iter() {
        Config::from_toml(path, text).expect("config seed is valid");
    }
    let seeds = config_seeds.clone();
    counts.push((
        "switchyard.toml",
        fuzz("switchyard.toml", toml_cases(config_seeds), |case| {
            let path = &seeds[case.seed].0;
            match Config::from_toml(path, &case.text) {
                Ok(c) => {
                    let _ = c.engine.engine_config(512);
                    let _ = c.router.router_config();
                    let _ = c.step_timeout();
                    let _ = c.model.served_name();
                    for d in &c.devices {
                        let _ = d.spec(&c);
                    }
                    for e in &c.endpoints {
                        let _ = e.authority();
                    }
                }
                Err(e) => assert_toml_error(&case, path, &e.to_string()),
            }
        }),
    ));

    // Fleet files: the examples, and server configs read as fleets.
    let mut fleet_seeds = read_seeds(&root.join("examples/fleets"));
    fleet_seeds.push(seeds[1].clone());
    let fleet_seeds = Arc::new(fleet_seeds);
    let fs = fleet_seeds.clone();
    counts.push((
        "fleet.toml",
        fuzz("fleet.toml", toml_cases(fleet_seeds), |case| {
            let path = &fs[case.seed].0;
            match FleetSpec::from_toml(path, &case.text) {
                Ok(f) => {
                    let n = f.num_devices();
                    assert!(
                        (1..=MAX_FLEET_DEVICES).contains(&n),
                        "{n} devices: {case:?}"
                    );
                    let _ = f.label();
                }
                Err(e) => assert_toml_error(&case, path, &e.to_string()),
            }
        }),
    ));
    let inline = prop_oneof![
        3 => prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(vec!["l4", "h100-sxm", "cpu", "mi300x"]).prop_map(String::from),
                    hostile_string(),
                ],
                prop_oneof![
                    Just(None),
                    hostile_int().prop_map(|i| Some(i.to_string())),
                    hostile_string().prop_map(Some),
                ],
            ),
            0..5,
        )
        .prop_map(|parts| {
            parts
                .into_iter()
                .map(|(p, n)| match n {
                    Some(n) => format!("{p}={n}"),
                    None => p,
                })
                .collect::<Vec<_>>()
                .join(",")
        }),
        1 => any::<String>(),
    ];
    counts.push((
        "fleet_inline",
        fuzz("fleet_inline", inline, |text| {
            match FleetSpec::inline(&text) {
                Ok(f) => {
                    let n = f.num_devices();
                    assert!(
                        (1..=MAX_FLEET_DEVICES).contains(&n),
                        "{n} devices: {text:?}"
                    );
                }
                Err(e) => assert!(e.to_string().starts_with("fleet "), "{e}"),
            }
        }),
    ));

    // Device profiles and model specs: every committed one is a seed.
    let l4 = DeviceProfile::load(&root.join("profiles/devices/l4.toml")).expect("l4");
    let llama = ModelSpec::load(&root.join("profiles/models/llama-3.1-8b.toml")).expect("llama");
    let device_seeds = Arc::new(read_seeds(&root.join("profiles/devices")));
    let ds = device_seeds.clone();
    counts.push((
        "device_profile",
        fuzz("device_profile", toml_cases(device_seeds), |case| {
            let path = &ds[case.seed].0;
            match DeviceProfile::from_toml(path, &case.text) {
                Ok(p) => cost_checks(&CostModel::new(p, llama.clone())),
                Err(e) => assert_toml_error(&case, path, &e.to_string()),
            }
        }),
    ));
    let model_seeds = Arc::new(read_seeds(&root.join("profiles/models")));
    let ms = model_seeds.clone();
    counts.push((
        "model_spec",
        fuzz("model_spec", toml_cases(model_seeds), |case| {
            let path = &ms[case.seed].0;
            match ModelSpec::from_toml(path, &case.text) {
                Ok(m) => {
                    let _ = (m.kv_layers(), m.linear_layers(), m.weight_bytes_total());
                    let _ = (m.kv_bytes_per_token(), m.state_bytes_per_sequence());
                    cost_checks(&CostModel::new(l4.clone(), m));
                }
                Err(e) => assert_toml_error(&case, path, &e.to_string()),
            }
        }),
    ));
    report("config and profile files", &counts);
}

// ---------------------------------------------------------------- traces

fn timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1970i64..2100, 1i64..13, 1i64..29, 0u32..24, 0u32..60, 0.0f64..60.0, prop::sample::select(vec![" ", "T"]), any::<bool>())
            .prop_map(|(y, mo, d, h, mi, s, sep, z)| {
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:010.7}{}", if z { "Z" } else { "" })
            }),
        2 => (0.0f64..1e7).prop_map(|s| s.to_string()),
        1 => (hostile_int(), hostile_int(), hostile_int(), hostile_int(), hostile_int(), hostile_float())
            .prop_map(|(y, mo, d, h, mi, s)| format!("{y}-{mo}-{d} {h}:{mi}:{s}")),
        1 => hostile_float().prop_map(|f| f.to_string()),
        2 => hostile_string(),
    ]
}

fn token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u32..20_000).prop_map(|n| n.to_string()),
        1 => hostile_int().prop_map(|i| i.to_string()),
        1 => hostile_string(),
    ]
}

const AZURE_FIELDS: [&str; 3] = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"];

fn assert_rows(rows: &[switchyard_loadgen::workload::trace::TraceRow], context: &str) {
    for (i, r) in rows.iter().enumerate() {
        assert!(
            r.t.is_finite() && r.t >= 0.0,
            "row {i} t = {}: {context}",
            r.t
        );
        assert!(i == 0 || rows[i - 1].t <= r.t, "unsorted: {context}");
        assert!(r.prompt_tokens >= 1 && r.output_tokens >= 1, "{context}");
        if let Some(ids) = &r.hash_ids {
            assert!(!ids.is_empty(), "{context}");
            assert!(
                ids.len() as u32 <= r.prompt_tokens.div_ceil(512),
                "{context}"
            );
        }
    }
    if let Some(r) = rows.first() {
        assert_eq!(r.t, 0.0, "{context}");
    }
}

fn assert_trace_error(e: &LoadgenError, fields: &[&str], context: &str) {
    match e {
        LoadgenError::TraceRow { line, field, .. } => {
            assert!(*line >= 1, "{e}: {context}");
            assert!(fields.contains(field), "field `{field}`: {e}: {context}");
            assert!(e.to_string().contains(field), "{e}");
        }
        other => panic!("not a row error: {other}: {context}"),
    }
}

#[test]
fn fuzz_trace_files() {
    let mut counts = Vec::new();
    let header = prop_oneof![
        2 => Just(None),
        3 => Just(Some("TIMESTAMP,ContextTokens,GeneratedTokens".to_string())),
        1 => Just(Some("generatedtokens, timestamp ,ContextTokens,extra".to_string())),
        1 => Just(Some("TIMESTAMP,ContextTokens".to_string())),
        1 => hostile_string().prop_map(|s| Some(format!("TIMESTAMP,{s}"))),
    ];
    let row = prop_oneof![
        8 => (timestamp_text(), token_text(), token_text()).prop_map(|(t, c, g)| format!("{t},{c},{g}")),
        1 => prop::collection::vec(token_text(), 0..5).prop_map(|v| v.join(",")),
        1 => Just(String::new()),
        1 => "[ -~]{0,40}",
    ];
    let csv = (
        header,
        prop::collection::vec(row, 0..16),
        prop::sample::select(vec!["\n", "\r\n"]),
    )
        .prop_map(|(h, rows, nl)| {
            let mut lines: Vec<String> = h.into_iter().collect();
            lines.extend(rows);
            lines.join(nl)
        });
    counts.push((
        "azure_csv",
        fuzz("azure_csv", csv, |text| {
            match parse_trace(Path::new("t.csv"), &text) {
                Ok(rows) => assert_rows(&rows, &text),
                Err(e) => assert_trace_error(&e, &AZURE_FIELDS, &text),
            }
        }),
    ));

    let field = |valid: BoxedStrategy<Value>| prop_oneof![1 => Just(None), 8 => valid.prop_map(Some), 2 => hostile_json().prop_map(Some)];
    let line = prop_oneof![
        8 => (
            field(prop_oneof![(0u64..10_000_000).prop_map(Value::from), (0.0f64..1e9).prop_map(|f| json!(f))].boxed()),
            field((0u64..200_000).prop_map(Value::from).boxed()),
            field((0u64..4000).prop_map(Value::from).boxed()),
            field(prop::collection::vec(any::<i64>(), 0..12).prop_map(|v| json!(v)).boxed()),
            prop::collection::vec(("[a-z_]{1,10}", hostile_json()), 0..2),
        )
            .prop_map(|(ts, input, output, ids, extra)| {
                let mut m: Map<String, Value> = extra.into_iter().collect();
                for (k, v) in [("timestamp", ts), ("input_length", input), ("output_length", output), ("hash_ids", ids)] {
                    if let Some(v) = v {
                        m.insert(k.to_string(), v);
                    }
                }
                Value::Object(m).to_string()
            }),
        1 => hostile_json().prop_map(|v| v.to_string()),
        1 => "[ -~]{0,60}",
        1 => Just(String::new()),
    ];
    let jsonl = prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"));
    counts.push((
        "mooncake_jsonl",
        fuzz("mooncake_jsonl", jsonl, |text| {
            match parse_jsonl_trace(Path::new("t.jsonl"), &text) {
                Ok(rows) => assert_rows(&rows, &text),
                Err(e) => assert_trace_error(
                    &e,
                    &[
                        "json",
                        "timestamp",
                        "input_length",
                        "output_length",
                        "hash_ids",
                    ],
                    &text,
                ),
            }
        }),
    ));
    counts.push((
        "timestamps",
        fuzz("timestamps", timestamp_text(), |s| {
            if let Some(t) = parse_timestamp(&s) {
                assert!(t.is_finite(), "{s:?} -> {t}");
            }
        }),
    ));
    report("trace files", &counts);
}

// ---------------------------------------------------------------- live server

/// One request to the live server and what its rejection may name.
#[derive(Debug, Clone)]
enum LiveCase {
    /// A body for `/v1/completions` or `/v1/chat/completions`.
    Body {
        chat: bool,
        body: Body,
        /// Fields a 400 may name; empty: the body must be accepted.
        hostile: Vec<&'static str>,
        /// Structured (known-hostile fields) or raw bytes.
        raw: bool,
        auth: Option<String>,
        device: Option<String>,
        content_type: String,
    },
    /// An `/admin/route` query string.
    Route { query: String },
    /// Raw header bytes no string-typed client sends (obs-text).
    RawAuth { header: Vec<u8> },
}

/// Body bytes, shown as (lossy, shortened) text in failure reports.
#[derive(Clone)]
struct Body(Vec<u8>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.0);
        let short: String = text.chars().take(1500).collect();
        write!(f, "{short:?} ({} bytes)", self.0.len())
    }
}

const LIVE_KEY: &str = "sk-fuzz";

fn live_cases() -> impl Strategy<Value = LiveCase> {
    let printable = "[ -~]{0,30}";
    let auth = prop_oneof![
        12 => Just(Some(format!("Bearer {LIVE_KEY}"))),
        1 => Just(None),
        1 => printable.prop_map(Some),
        1 => printable.prop_map(|s| Some(format!("Bearer {s}"))),
    ];
    let device = prop_oneof![
        12 => Just(None),
        1 => Just(Some("l4-0".to_string())),
        1 => printable.prop_map(Some),
    ];
    let content_type = prop::sample::select(vec![
        "application/json",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-16",
        "",
    ])
    .prop_map(String::from);
    let structured = prop_oneof![
        completion_body("tiny-llama", 259).prop_map(|(b, h)| (false, b, h)),
        chat_body("tiny-llama", 259).prop_map(|(b, h)| (true, b, h)),
    ];
    let body = (
        structured,
        auth.clone(),
        device.clone(),
        content_type.clone(),
    )
        .prop_map(
            |((chat, body, hostile), auth, device, content_type)| LiveCase::Body {
                chat,
                body: Body(serde_json::to_vec(&body).unwrap_or_default()),
                hostile,
                raw: false,
                auth,
                device,
                content_type,
            },
        );
    let valid = completion_body("tiny-llama", 259)
        .prop_map(|(b, _)| serde_json::to_vec(&b).unwrap_or_default())
        .boxed();
    let raw = (raw_bytes(valid), any::<bool>(), auth, device, content_type).prop_map(
        |(body, chat, auth, device, content_type)| LiveCase::Body {
            chat,
            body: Body(body),
            hostile: Vec::new(),
            raw: true,
            auth,
            device,
            content_type,
        },
    );
    let route = prop_oneof![
        (0u32..600, 0u32..600).prop_map(|(p, m)| format!("prompt_tokens={p}&max_tokens={m}")),
        (hostile_int(), hostile_int())
            .prop_map(|(p, m)| format!("prompt_tokens={p}&max_tokens={m}")),
        "[a-z_=&%0-9+-]{0,40}",
    ]
    .prop_map(|query| LiveCase::Route { query });
    let raw_auth = prop::collection::vec(
        prop_oneof![3 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')],
        0..30,
    )
    .prop_map(|mut h| {
        h.splice(0..0, b"Bearer ".iter().copied());
        LiveCase::RawAuth { header: h }
    });
    prop_oneof![12 => body, 4 => raw, 2 => route, 1 => raw_auth]
}

/// Checks one response: 2xx with the right body, or an OpenAI-shaped 4xx
/// naming what was wrong.
fn check_live(case: &LiveCase, status: u16, body: &str) {
    assert!(status < 500, "{status} for {case:?}: {body}");
    if (200..300).contains(&status) {
        if let LiveCase::Body { .. } = case {
            if body.starts_with("data: ") {
                assert!(
                    body.trim_end().ends_with("data: [DONE]"),
                    "{case:?}: {body}"
                );
            } else {
                let v: Value =
                    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {case:?}: {body}"));
                assert!(v["choices"][0].is_object(), "{case:?}: {body}");
            }
        }
        return;
    }
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("4xx body is not JSON ({e}): {case:?}: {body}"));
    assert_openai_4xx(status, &v, case);
    let param = v["error"]["param"].as_str();
    let message = v["error"]["message"].as_str().unwrap_or_default();
    match (status, case) {
        (401, _) => assert!(message.contains("Authorization"), "{case:?}: {body}"),
        (404, LiveCase::Body { device, .. }) => assert!(
            param == Some("model") || (device.is_some() && message.contains("x-switchyard-device")),
            "{case:?}: {body}"
        ),
        // Any prompt may be too long once tokenized; that names the prompt.
        (400, LiveCase::Body { chat, .. }) if v["error"]["code"] == "context_length_exceeded" => {
            let want = if *chat { "messages" } else { "prompt" };
            assert_eq!(param, Some(want), "{case:?}: {body}");
        }
        (
            400,
            LiveCase::Body {
                body: bytes,
                hostile,
                raw,
                ..
            },
        ) => {
            let object = serde_json::from_slice::<Value>(&bytes.0)
                .ok()
                .and_then(|v| match v {
                    Value::Object(m) => Some(m),
                    _ => None,
                });
            match (raw, object) {
                (false, _) => assert!(
                    param.is_some_and(|p| hostile.contains(&p)),
                    "{case:?}: {body}"
                ),
                (true, Some(m)) => assert!(
                    param.is_some_and(|p| m.contains_key(p) || p == "prompt" || p == "messages"),
                    "{case:?}: {body}"
                ),
                (true, None) => {}
            }
        }
        (400, LiveCase::Route { .. }) => assert!(
            matches!(param, Some("prompt_tokens" | "max_tokens" | "prompt")),
            "{case:?}: {body}"
        ),
        (429, _) => assert_eq!(v["error"]["type"], "rate_limit_error"),
        _ => panic!("unexpected {status} for {case:?}: {body}"),
    }
}

fn raw_http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(request).expect("write");
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (status, body.to_string())
}

#[test]
fn fuzz_live_server() {
    let requests = env_u64("SWITCHYARD_FUZZ_HTTP", 400).min(u64::from(u32::MAX)) as u32;
    let root = common::root();
    let mut config = common::sim_config(
        &[("l4-0", "l4"), ("h100-0", "h100-sxm")],
        "time_scale = 0.0\nkv_blocks = 256",
        &format!(
            "[server]\napi_keys = [\"{LIVE_KEY}\"]\nmax_body_bytes = 65536\n\
             [model]\nspec = \"tiny-llama\"\npath = {:?}\n",
            root.join("models/tiny").display().to_string()
        ),
    );
    config.push('\n');
    let server = common::Server::start(&config);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let seed = env_u64("SWITCHYARD_FUZZ_SEED", 0x5717_c4ad) ^ fnv("live");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig {
            cases: requests,
            failure_persistence: None,
            // Each shrink step is a request; keep a failure's report quick.
            max_shrink_iters: 200,
            ..RunnerConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let start = Instant::now();
    let sent = AtomicU64::new(0);
    let statuses = Mutex::new(BTreeSet::new());
    let result = runner.run(&live_cases(), |case| {
        sent.fetch_add(1, Ordering::Relaxed);
        let reply = |r: Result<ureq::Response, ureq::Error>| match r {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("transport error: {e} for {case:?}"),
        };
        let (status, body) = match &case {
            LiveCase::Body {
                chat,
                body,
                auth,
                device,
                content_type,
                ..
            } => {
                let path = if *chat {
                    "/v1/chat/completions"
                } else {
                    "/v1/completions"
                };
                let mut req = agent.post(&server.url(path));
                if !content_type.is_empty() {
                    req = req.set("content-type", content_type);
                }
                if let Some(a) = auth {
                    req = req.set("authorization", a);
                }
                if let Some(d) = device {
                    req = req.set("x-switchyard-device", d);
                }
                reply(req.send_bytes(&body.0))
            }
            LiveCase::Route { query } => reply(
                agent
                    .get(&format!("{}?{query}", server.url("/admin/route")))
                    .call(),
            ),
            LiveCase::RawAuth { header } => {
                let body = br#"{"prompt": "hi", "max_tokens": 1}"#;
                let mut req = format!(
                    "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\nAuthorization: ",
                    body.len()
                )
                .into_bytes();
                req.extend_from_slice(header);
                req.extend_from_slice(b"\r\n\r\n");
                req.extend_from_slice(body);
                raw_http(&server.addr(), &req)
            }
        };
        statuses.lock().map(|mut s| s.insert(status)).ok();
        check_live(&case, status, &body);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz live: {e}");
    }
    // Still up, and still serving.
    assert_eq!(
        agent
            .get(&server.url("/health"))
            .call()
            .expect("health")
            .status(),
        200
    );
    let ok = agent
        .post(&server.url("/v1/completions"))
        .set("authorization", &format!("Bearer {LIVE_KEY}"))
        .send_json(json!({"prompt": "still here", "max_tokens": 2}))
        .expect("completion after fuzzing");
    assert_eq!(ok.status(), 200);
    println!(
        "fuzz live: {} requests ({requests} cases) in {:.2} s, statuses {:?}",
        sent.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        statuses.lock().map(|s| s.clone()).unwrap_or_default()
    );
}
