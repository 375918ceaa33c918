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
