//! The committed default `switchyard.toml` serves the generated tiny model
//! through ONNX Runtime on the CPU (ORT_DYLIB_PATH comes from scripts/setup.sh).

mod common;

use common::{root, sse_data, Server};
use serde_json::{json, Value};

#[test]
fn default_config_serves_a_real_model() {
    let text = std::fs::read_to_string(root().join("switchyard.toml")).unwrap();
    let cfg = text
        .replace(
            "profiles_dir = \"profiles\"",
            &format!(
                "profiles_dir = {:?}",
                root().join("profiles").display().to_string()
            ),
        )
        .replace(
            "path = \"models/tiny\"",
            &format!(
                "path = {:?}",
                root().join("models/tiny").display().to_string()
            ),
        );
    let s = Server::start(&cfg);
    let devices = s.get_json("/admin/devices");
    assert_eq!(devices["devices"][0]["backend"], "onnx", "{devices}");
    assert_eq!(devices["devices"][0]["state"], "ready", "{devices}");
    let (code, body) = s.post(
        "/v1/completions",
        &json!({"model": "tiny-llama", "prompt": "Hello", "max_tokens": 8, "temperature": 0, "stream": true, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    // Greedy decoding is deterministic: the same request gives the same text.
    let (_, again) = s.post(
        "/v1/completions",
        &json!({"model": "tiny-llama", "prompt": "Hello", "max_tokens": 8, "temperature": 0, "ignore_eos": true}),
    );
    let v: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 8);
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(streamed, v["choices"][0]["text"].as_str().unwrap());
    let (code, body) = s.post(
        "/v1/chat/completions",
        &json!({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    );
    assert_eq!(code, 200, "{body}");
}
