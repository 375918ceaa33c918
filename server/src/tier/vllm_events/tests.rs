use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use proptest::prelude::*;
use switchyard_scheduler::kv::prefix_hashes;

use super::*;
use crate::tier::kv_index::KvIndex;

fn s(x: &str) -> Value {
    Value::from(x)
}

fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(fields.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn ints(xs: &[u64]) -> Value {
    Value::Array(xs.iter().map(|&x| Value::from(x)).collect())
}

fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).expect("encode");
    buf
}

fn stored_map(
    hashes: Value,
    parent: Value,
    tokens: &[u64],
    bs: u64,
    extra: Vec<(&str, Value)>,
) -> Value {
    let mut f = vec![
        ("type", s("BlockStored")),
        ("block_hashes", hashes),
        ("parent_block_hash", parent),
        ("token_ids", ints(tokens)),
        ("block_size", Value::from(bs)),
        ("lora_id", Value::Nil),
        ("medium", s("GPU")),
        ("lora_name", Value::Nil),
    ];
    for (k, v) in extra {
        match f.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => f.push((k, v)),
        }
    }
    map(f)
}

#[test]
fn decodes_map_events_in_a_map_batch() {
    let batch = map(vec![
        ("ts", Value::F64(1.5)),
        (
            "events",
            Value::Array(vec![
                stored_map(ints(&[10, 11]), Value::Nil, &[1, 2, 3, 4], 2, vec![]),
                map(vec![
                    ("type", s("BlockRemoved")),
                    ("block_hashes", ints(&[10])),
                    ("medium", s("GPU")),
                ]),
                map(vec![("type", s("AllBlocksCleared"))]),
                map(vec![("type", s("SomethingNew")), ("x", Value::from(1))]),
            ]),
        ),
        ("data_parallel_rank", Value::from(3)),
    ]);
    let d = decode_payload(&encode(&batch)).expect("decodes");
    assert_eq!(d.ts, 1.5);
    assert_eq!(d.data_parallel_rank, Some(3));
    assert_eq!(d.ignored, 1);
    assert_eq!(
        d.events,
        vec![
            KvEvent::Stored {
                blocks: vec![
                    StoredBlock {
                        hash: 10,
                        parent: None,
                        tokens: vec![1, 2]
                    },
                    StoredBlock {
                        hash: 11,
                        parent: Some(10),
                        tokens: vec![3, 4]
                    },
                ]
            },
            KvEvent::Removed {
                engine_hashes: vec![10]
            },
            KvEvent::AllCleared,
        ]
    );
}

#[test]
fn decodes_array_like_events_with_negative_and_bytes_hashes() {
    // The first releases: everything positional, trailing defaults omitted.
    let mut digest = vec![0xAAu8; 24];
    digest.extend(7u64.to_be_bytes());
    let batch = Value::Array(vec![
        Value::F64(2.0),
        Value::Array(vec![
            Value::Array(vec![
                s("BlockStored"),
                Value::Array(vec![Value::from(-5i64), Value::Binary(digest)]),
                Value::from(99u64),
                ints(&[1, 2, 3, 4]),
                Value::from(2u64),
                Value::Nil,
            ]),
            Value::Array(vec![s("BlockRemoved"), ints(&[99])]),
            Value::Array(vec![s("AllBlocksCleared")]),
        ]),
    ]);
    let d = decode_payload(&encode(&batch)).expect("decodes");
    assert_eq!(d.data_parallel_rank, None);
    let KvEvent::Stored { blocks } = &d.events[0] else {
        panic!("{:?}", d.events);
    };
    assert_eq!(blocks[0].hash, (-5i64) as u64);
    assert_eq!(blocks[0].parent, Some(99));
    assert_eq!(blocks[1].hash, 7);
    assert_eq!(blocks[1].parent, Some((-5i64) as u64));
    assert_eq!(
        d.events[1],
        KvEvent::Removed {
            engine_hashes: vec![99]
        }
    );
    assert_eq!(d.events[2], KvEvent::AllCleared);
}

#[test]
fn skips_blocks_that_do_not_match_a_plain_token_prefix() {
    let ev =
        |extra: Vec<(&str, Value)>| stored_map(ints(&[1, 2]), Value::Nil, &[5, 6, 7, 8], 2, extra);
    let batch = Value::Array(vec![
        Value::F64(0.0),
        Value::Array(vec![
            ev(vec![("lora_name", s("adapter"))]),
            ev(vec![("medium", s("CPU"))]),
            ev(vec![("group_idx", Value::from(1))]),
            // The second block carries a multimodal key: only the first is plain.
            ev(vec![(
                "extra_keys",
                Value::Array(vec![Value::Nil, Value::Array(vec![s("mm")])]),
            )]),
            map(vec![
                ("type", s("BlockRemoved")),
                ("block_hashes", ints(&[1])),
                ("medium", s("CPU")),
            ]),
        ]),
    ]);
    let d = decode_payload(&encode(&batch)).expect("decodes");
    assert_eq!(d.ignored, 5);
    assert_eq!(
        d.events,
        vec![KvEvent::Stored {
            blocks: vec![StoredBlock {
                hash: 1,
                parent: None,
                tokens: vec![5, 6]
            }]
        }]
    );
}

#[test]
fn malformed_messages_are_typed_errors() {
    assert_eq!(split_frames(&[b"", b"x"]), Err(DecodeError::Frames(2)));
    assert_eq!(
        split_frames(&[b"", b"123", b""]),
        Err(DecodeError::SeqFrame(3))
    );
    assert_eq!(
        split_frames(&[b"t", &5u64.to_be_bytes(), b"p"]),
        Ok((5, &b"p"[..]))
    );
    assert!(matches!(
        decode_payload(&[0x92, 0x01]),
        Err(DecodeError::Msgpack(_))
    ));
    assert!(matches!(
        decode_payload(&encode(&Value::from(1))),
        Err(DecodeError::Shape { .. })
    ));
    let short = Value::Array(vec![
        Value::F64(0.0),
        Value::Array(vec![stored_map(
            ints(&[1, 2]),
            Value::Nil,
            &[5, 6, 7],
            2,
            vec![],
        )]),
    ]);
    assert_eq!(
        decode_payload(&encode(&short)),
        Err(DecodeError::TokenCount {
            tokens: 3,
            blocks: 2,
            block_size: 2
        })
    );
}

#[test]
fn sequence_numbers_classify_gaps_and_restarts() {
    let mut t = SeqTracker::default();
    assert_eq!(t.observe(4), Continuity::First);
    assert_eq!(t.observe(5), Continuity::Next);
    assert_eq!(t.observe(8), Continuity::Gap { missed: 2 });
    assert_eq!(t.observe(0), Continuity::Restarted);
}

proptest! {
    /// Whatever a remote sends, decoding returns a value or an error.
    #[test]
    fn decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload(&bytes);
    }
}

/// `tests/python/mock_vllm.py`, killed when dropped.
struct Mock {
    child: Child,
    port: u16,
    kv_port: u16,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mock {
    fn start(args: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/mock_vllm.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0", "--kv-events-port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 on PATH");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let ready: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let port = |k: &str| ready.as_ref().and_then(|r| r[k].as_u64()).map(|p| p as u16);
        let (Some(port), Some(kv_port)) = (port("port"), port("kv_events_port")) else {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            panic!(
                "mock_vllm.py did not start (scripts/setup.sh installs pyzmq and msgpack); stdout: {line:?}\nstderr:\n{err}"
            );
        };
        Self {
            child,
            port,
            kv_port,
        }
    }

    /// POSTs a non-streaming completion and returns the response.
    fn complete(&self, prompt: &[u32]) -> String {
        let body = serde_json::json!({"model": "m", "prompt": prompt, "max_tokens": 2}).to_string();
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the mock");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            c,
            "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("response");
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        out
    }
}

/// Starts the mock with `args`, serves a prompt of three full blocks and a
/// partial one, and checks that the events it publishes, through the
/// subscriber, make the index find exactly those three blocks.
async fn events_from_mock_fill_the_index(args: &[&str]) {
    let mock = Mock::start(args);
    let ep = EndpointKey(7);
    let (tx, mut rx) = mpsc::channel(64);
    let task = spawn_subscriber(
        SubscriberConfig::new(ep, format!("tcp://127.0.0.1:{}", mock.kv_port)),
        tx,
    );
    let mut index = KvIndex::default();
    let apply = |b: VllmBatch, index: &mut KvIndex| {
        assert_eq!(b.endpoint, ep);
        for e in b.payload.events {
            index.apply(b.endpoint, e);
        }
    };
    let mock = std::sync::Arc::new(mock);
    let complete = |prompt: Vec<u32>| {
        let m = mock.clone();
        async move {
            tokio::task::spawn_blocking(move || m.complete(&prompt))
                .await
                .expect("request")
        }
    };

    // A PUB socket drops what it sends before the subscription reaches it:
    // send distinct warm-up prompts until one's events arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut warm = 0u32;
    loop {
        assert!(
            Instant::now() < deadline,
            "no KV events from the mock within 20 s"
        );
        warm += 1;
        complete(vec![50_000 + warm; 16]).await;
        if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            apply(b, &mut index);
            break;
        }
    }

    let prompt: Vec<u32> = (0..16 * 3 + 5).map(|i| i * 13 % 997).collect();
    let hashes = prefix_hashes(&prompt, 16);
    assert_eq!(hashes.len(), 3);
    complete(prompt.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while index.cached_prefix_blocks(ep, &hashes) < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(b)) => apply(b, &mut index),
            _ => break,
        }
    }
    assert_eq!(index.cached_prefix_blocks(ep, &hashes), 3);
    // A prompt sharing two blocks matches two.
    let mut other = prompt[..32].to_vec();
    other.extend([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    assert_eq!(
        index.cached_prefix_blocks(ep, &prefix_hashes(&other, 16)),
        2
    );
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("subscriber stops when its receiver is dropped")
        .expect("subscriber task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_vllm_events_map_layout_int_hashes() {
    events_from_mock_fill_the_index(&["--block-size", "16"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_vllm_events_array_layout_bytes_hashes() {
    events_from_mock_fill_the_index(&[
        "--block-size",
        "16",
        "--kv-layout",
        "array",
        "--hash-format",
        "bytes",
    ])
    .await;
}
