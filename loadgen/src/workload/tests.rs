use super::*;

fn build(specs: &[&str], o: &WorkloadOptions) -> Result<Workload, LoadgenError> {
    let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
    WorkloadSource::new(&specs)?.build(o)
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn fixed_poisson_is_seeded_and_bounded() {
    let o = WorkloadOptions {
        rate: Some(10.0),
        requests: Some(500),
        seed: 42,
        ..WorkloadOptions::default()
    };
    let a = build(&["fixed:prompt=100,output=20"], &o).unwrap();
    let b = build(&["fixed:prompt=100,output=20"], &o).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.requests.len(), 500);
    assert!(a
        .requests
        .iter()
        .all(|r| r.prompt_tokens == 100 && r.output_tokens == 20));
    let rate = a.offered_rate();
    assert!((rate - 10.0).abs() < 1.5, "{rate}");
    assert!(a.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    let c = build(
        &["fixed:prompt=100,output=20"],
        &WorkloadOptions { seed: 43, ..o },
    )
    .unwrap();
    assert_ne!(a, c);
}

#[test]
fn duration_bounds_arrivals() {
    let o = WorkloadOptions {
        rate: Some(50.0),
        duration: Some(2.0),
        arrival: Arrival::Constant,
        ..WorkloadOptions::default()
    };
    let w = build(&["mix:prefill-heavy=1,decode-heavy=3"], &o).unwrap();
    assert!(
        (95..=100).contains(&w.requests.len()),
        "{}",
        w.requests.len()
    );
    assert!(w
        .requests
        .iter()
        .all(|r| r.arrival < Duration::from_secs(2)));
}

#[test]
fn gamma_arrivals_are_burstier_than_poisson() {
    let cv = |arrival| {
        let o = WorkloadOptions {
            rate: Some(20.0),
            requests: Some(5000),
            arrival,
            ..WorkloadOptions::default()
        };
        let w = build(&["fixed:prompt=8,output=8"], &o).unwrap();
        let gaps: Vec<f64> = w
            .requests
            .windows(2)
            .map(|p| (p[1].arrival - p[0].arrival).as_secs_f64())
            .collect();
        let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let v = gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64;
        v.sqrt() / m
    };
    let p = cv(Arrival::Poisson);
    let g = cv(Arrival::Gamma { cv: 3.0 });
    assert!((p - 1.0).abs() < 0.1, "{p}");
    assert!(g > 2.0, "{g}");
}

#[test]
fn traces_merge_window_and_rescale() {
    let code = format!("trace:{}", fixture("code-window.csv"));
    let conv = format!("trace:{}", fixture("conv-window.csv"));
    let all = build(&[&code, &conv], &WorkloadOptions::default()).unwrap();
    assert!(all
        .requests
        .windows(2)
        .all(|w| w[0].arrival <= w[1].arrival));
    assert!(
        all.requests.iter().any(|r| r.source == 0) && all.requests.iter().any(|r| r.source == 1)
    );
    let win = build(
        &[&code],
        &WorkloadOptions {
            start: 10.0,
            duration: Some(20.0),
            speedup: 2.0,
            ..WorkloadOptions::default()
        },
    )
    .unwrap();
    assert!(!win.requests.is_empty());
    assert!(win
        .requests
        .iter()
        .all(|r| r.arrival < Duration::from_secs(20)));
    let fast = build(
        &[&code, &conv],
        &WorkloadOptions {
            rate: Some(100.0),
            ..WorkloadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(fast.requests.len(), all.requests.len());
    assert!(
        (fast.offered_rate() - 100.0).abs() < 5.0,
        "{}",
        fast.offered_rate()
    );
}

#[test]
fn closed_loop_has_no_arrival_times() {
    let o = WorkloadOptions {
        concurrency: Some(4),
        requests: Some(10),
        ..WorkloadOptions::default()
    };
    let w = build(&["fixed:prompt=uniform:10:20,output=5"], &o).unwrap();
    assert_eq!(w.requests.len(), 10);
    assert!(w.requests.iter().all(|r| r.arrival == Duration::ZERO));
    assert_eq!(w.concurrency, Some(4));
    let two = build(&["fixed:prompt=1,output=1", "fixed:prompt=2,output=2"], &o).unwrap();
    let sources: Vec<u16> = two.requests.iter().map(|r| r.source).take(4).collect();
    assert_eq!(
        sources,
        vec![0, 1, 0, 1],
        "closed-loop workloads interleave"
    );
}

#[test]
fn bad_specs_name_the_problem() {
    let o = WorkloadOptions {
        rate: Some(1.0),
        ..WorkloadOptions::default()
    };
    let e = build(&["mix:prefill-heavy=1,tiny=2"], &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown mix `tiny`"), "{e}");
    let e = build(&["fixed:prompt=10"], &o).unwrap_err().to_string();
    assert!(e.contains("output"), "{e}");
    let e = build(&["poisson:rate=3"], &o).unwrap_err().to_string();
    assert!(e.contains("unknown kind"), "{e}");
    let e = build(&["trace:/nonexistent/x.csv"], &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.csv"), "{e}");
    let e = build(&["fixed:prompt=10,output=2"], &WorkloadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--rate"), "{e}");
    assert!("gamma:cv=-1".parse::<Arrival>().is_err());
    assert_eq!(
        "gamma:cv=2".parse::<Arrival>().unwrap(),
        Arrival::Gamma { cv: 2.0 }
    );
}

/// Writes `text` to a fresh file named `name` under the system temp dir.
fn temp_trace(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn mooncake_line(ms: u64, input: u32, output: u32, hash_ids: &[u64]) -> String {
    serde_json::json!({
        "timestamp": ms,
        "input_length": input,
        "output_length": output,
        "hash_ids": hash_ids,
    })
    .to_string()
}

fn ids(r: &ReqSpec) -> Vec<u32> {
    let mut v = Vec::new();
    prompt_token_ids(r, 1..31_999, 0, &mut v);
    v
}

#[test]
fn jsonl_trace_parses_rows_and_hashes() {
    let text = [
        mooncake_line(0, 1200, 10, &[1, 2, 3]),
        String::new(),
        mooncake_line(500, 512, 0, &[1]),
        // Extra ids beyond ceil(300 / 512) = 1 block are dropped.
        mooncake_line(250, 300, 5, &[7, 8, 9]),
        // Too few ids: the uncovered tail is the request's own.
        mooncake_line(1000, 2048, 3, &[1, 2]),
        mooncake_line(1500, 0, 4, &[]),
    ]
    .join("\n");
    let path = temp_trace("parse.jsonl", &text);
    let w = build(
        &[&format!("trace:{}", path.display())],
        &WorkloadOptions::default(),
    )
    .unwrap();
    let r = &w.requests;
    assert_eq!(r.len(), 5);
    let arrivals: Vec<u64> = r.iter().map(|q| q.arrival.as_millis() as u64).collect();
    assert_eq!(arrivals, vec![0, 250, 500, 1000, 1500]);
    assert_eq!((r[0].prompt_tokens, r[0].output_tokens), (1200, 10));
    assert_eq!(r[0].hash_ids.as_deref(), Some(&[1, 2, 3][..]));
    assert_eq!(r[1].hash_ids.as_deref(), Some(&[7][..]));
    assert_eq!(r[2].output_tokens, 1, "0 is raised to 1");
    assert_eq!(r[3].hash_ids.as_deref(), Some(&[1, 2][..]));
    assert_eq!((r[4].prompt_tokens, r[4].hash_ids.clone()), (1, None));
    for q in r {
        let v = ids(q);
        assert_eq!(v.len(), q.prompt_tokens as usize);
        assert!(v.iter().all(|&t| (1..31_999).contains(&t)));
    }
    // A partial last block is a prefix of the full block with the same id.
    assert_eq!(ids(&r[2])[..], ids(&r[0])[..512]);
    let (a, d) = (ids(&r[0]), ids(&r[3]));
    assert_eq!(a[..1024], d[..1024]);
    assert_ne!(a[1024..1200], d[1024..1200]);
    // The CSV reader still serves other extensions.
    assert!(!trace::is_jsonl(Path::new("x.csv")) && trace::is_jsonl(Path::new("x.JSONL")));
    std::fs::remove_file(path).ok();
}

#[test]
fn jsonl_errors_name_file_line_and_field() {
    let p = Path::new("m.jsonl");
    let err = |text: &str| trace::parse_jsonl_trace(p, text).unwrap_err().to_string();
    let good = mooncake_line(0, 10, 2, &[4]);
    let cases = [
        ("{\"timestamp\": 0, \"input_length\": 10", "json"),
        ("[1, 2, 3]", "json"),
        (
            r#"{"input_length": 10, "output_length": 2, "hash_ids": []}"#,
            "timestamp",
        ),
        (
            r#"{"timestamp": -5, "input_length": 10, "output_length": 2, "hash_ids": []}"#,
            "timestamp",
        ),
        (
            r#"{"timestamp": 0, "input_length": "ten", "output_length": 2, "hash_ids": []}"#,
            "input_length",
        ),
        (
            r#"{"timestamp": 0, "input_length": 1.5, "output_length": 2, "hash_ids": []}"#,
            "input_length",
        ),
        (
            r#"{"timestamp": 0, "input_length": 99999999999, "output_length": 2, "hash_ids": []}"#,
            "input_length",
        ),
        (
            r#"{"timestamp": 0, "input_length": 10, "hash_ids": []}"#,
            "output_length",
        ),
        (
            r#"{"timestamp": 0, "input_length": 10, "output_length": 2}"#,
            "hash_ids",
        ),
        (
            r#"{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": 3}"#,
            "hash_ids",
        ),
        (
            r#"{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": ["a"]}"#,
            "hash_ids",
        ),
    ];
    for (bad, field) in cases {
        let e = err(&format!("{good}\n\n{bad}\n{good}"));
        assert!(
            e.contains("m.jsonl:3") && e.contains(&format!("`{field}`")),
            "{bad}: {e}"
        );
    }
    // Negative ids are opaque labels, kept by their bits.
    let rows =
        trace::parse_jsonl_trace(p, &mooncake_line(0, 10, 2, &[]).replace("[]", "[-1]")).unwrap();
    assert_eq!(rows[0].hash_ids.as_deref(), Some(&[u64::MAX][..]));
    let e = build(&["trace:/nonexistent/m.jsonl"], &WorkloadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/m.jsonl"), "{e}");
}

#[test]
fn shared_hash_ids_share_exactly_their_blocks() {
    let req = |id: u64, source: u16, h: &[u64]| ReqSpec {
        id,
        arrival: Duration::ZERO,
        prompt_tokens: 4 * 512,
        output_tokens: 1,
        shared_prefix: 0,
        source,
        hash_ids: Some(h.into()),
    };
    for k in 0..=4usize {
        let base = [10, 11, 12, 13];
        let mut other = [90, 91, 92, 93];
        other[..k].copy_from_slice(&base[..k]);
        // Different id and source: only the hashes may make tokens equal.
        let (a, b) = (ids(&req(1, 0, &base)), ids(&req(2, 3, &other)));
        let n = k * 512;
        assert_eq!(a[..n], b[..n], "k = {k}");
        for blk in k..4 {
            let r = blk * 512..(blk + 1) * 512;
            assert_ne!(a[r.clone()], b[r], "k = {k}, block {blk}");
        }
    }
    // The seed changes every block, so separate runs do not hit each other's cache.
    let r = req(1, 0, &[10]);
    let (mut s0, mut s1) = (Vec::new(), Vec::new());
    prompt_token_ids(&r, 16..256, 0, &mut s0);
    prompt_token_ids(&r, 16..256, 1, &mut s1);
    assert_ne!(s0[..512], s1[..512]);
    assert!(s0.iter().all(|t| (16..256).contains(t)));
    // Without hashes, the source's shared prefix is common and the rest is not.
    let plain = |id| ReqSpec {
        shared_prefix: 100,
        hash_ids: None,
        ..req(id, 0, &[])
    };
    let (a, b) = (ids(&plain(1)), ids(&plain(2)));
    assert_eq!(a[..100], b[..100]);
    assert_ne!(a[100..], b[100..]);
}

#[test]
fn jsonl_rate_and_windows_rescale() {
    // 101 requests 100 ms apart: 10 req/s over 10 s of trace time.
    let text: Vec<String> = (0..=100)
        .map(|i| mooncake_line(i * 100, 600, 8, &[0, i]))
        .collect();
    let path = temp_trace("rate.jsonl", &text.join("\n"));
    let spec = format!("trace:{}", path.display());
    let natural = build(&[&spec], &WorkloadOptions::default()).unwrap();
    assert_eq!(natural.requests.len(), 101);
    assert!((natural.offered_rate() - 10.0).abs() < 1e-6);
    let fast = build(
        &[&spec],
        &WorkloadOptions {
            rate: Some(40.0),
            ..WorkloadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(fast.requests.len(), 101);
    // The scale counts n requests over the span, offered_rate n - 1 gaps.
    assert!(
        (fast.offered_rate() - 40.0).abs() < 0.5,
        "{}",
        fast.offered_rate()
    );
    assert_eq!(fast.requests[7].hash_ids, natural.requests[7].hash_ids);
    let win = build(
        &[&spec],
        &WorkloadOptions {
            start: 2.0,
            duration: Some(3.0),
            speedup: 2.0,
            requests: Some(50),
            ..WorkloadOptions::default()
        },
    )
    .unwrap();
    // Trace window [2 s, 8 s) holds 60 rows; the count bound keeps 50.
    assert_eq!(win.requests.len(), 50);
    assert_eq!(win.requests[0].arrival, Duration::ZERO);
    assert_eq!(win.requests[0].hash_ids.as_deref(), Some(&[0, 20][..]));
    assert!(win
        .requests
        .iter()
        .all(|r| r.arrival < Duration::from_secs(3)));
    std::fs::remove_file(path).ok();
}

#[test]
fn mooncake_synthetic_trace_has_its_block_reuse() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/traces/mooncake-synthetic.jsonl"
    );
    if !Path::new(path).exists() {
        eprintln!("skipping: {path} is absent");
        return;
    }
    let w = build(&[&format!("trace:{path}")], &WorkloadOptions::default()).unwrap();
    assert_eq!(w.requests.len(), 3993);
    let mut seen = std::collections::HashSet::new();
    let (mut blocks, mut reused) = (0usize, 0usize);
    for r in &w.requests {
        let h = r.hash_ids.as_deref().unwrap_or(&[]);
        assert_eq!(
            h.len(),
            r.prompt_tokens.div_ceil(HASH_BLOCK_TOKENS) as usize
        );
        for &id in h {
            blocks += 1;
            reused += usize::from(!seen.insert(id));
        }
    }
    let frac = reused as f64 / blocks as f64;
    assert!((frac - 0.64).abs() < 0.01, "block reuse {frac}");
    let last = w.requests.last().unwrap().arrival.as_secs_f64();
    assert!((last - 1022.025).abs() < 1e-6, "{last}");
}
