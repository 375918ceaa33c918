//! The committed default `switchyard.toml` serves SmolLM2-135M-Instruct
//! through ONNX Runtime on the CPU (scripts/setup.sh converts the model and
//! exports ORT_DYLIB_PATH; without either the test skips).

mod common;

use common::{root, sse_data, Server};
use serde_json::{json, Value};
use switchyard_backends::fixtures;

#[test]
fn default_config_serves_a_real_model() {
    const DIR: &str = fixtures::SMOLLM2_DIR;
    if fixtures::smollm2_dir("model.onnx").is_none() {
        return;
    }
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
            &format!("path = \"{DIR}\""),
            &format!("path = {:?}", root().join(DIR).display().to_string()),
        );
    let s = Server::start(&cfg);
    let devices = s.get_json("/admin/devices");
    assert_eq!(devices["devices"][0]["backend"], "onnx", "{devices}");
    assert_eq!(devices["devices"][0]["state"], "ready", "{devices}");
    let (code, body) = s.post(
        "/v1/completions",
        &json!({"model": "smollm2-135m-instruct", "prompt": "Hello", "max_tokens": 8, "temperature": 0, "stream": true, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    // Greedy decoding is deterministic: the same request gives the same text.
    let (_, again) = s.post(
        "/v1/completions",
        &json!({"model": "smollm2-135m-instruct", "prompt": "Hello", "max_tokens": 8, "temperature": 0, "ignore_eos": true}),
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
    // A real instruct model: the first question a newcomer asks gets a right answer.
    let (code, body) = s.post(
        "/v1/chat/completions",
        &json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 32, "temperature": 0}),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains('4'), "{answer:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
}
