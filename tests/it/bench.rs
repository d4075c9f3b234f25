//! `voxrelay bench` on a tiny load: the fake LLM, the real server binary as a child
//! process and simulated calls produce every figure, and the server drains cleanly.

use std::time::Duration;

use voxrelay::bench::{BenchOptions, run};

#[tokio::test]
async fn a_small_benchmark_measures_everything_and_stops_by_itself() {
    let options = BenchOptions {
        calls: vec![3],
        turns: 3,
        think: Duration::from_millis(20),
        saturate: Duration::from_secs(1),
        server_exe: Some(env!("CARGO_BIN_EXE_voxrelay").into()),
        sse_done: true,
    };
    let reports = tokio::time::timeout(Duration::from_secs(60), run(&options))
        .await
        .expect("the benchmark stops by itself")
        .expect("the benchmark runs");
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.errors, 0, "{}", r.markdown());
    assert!(r.clean_exit, "the server exits 0 after SIGTERM");
    // Every turn (3 calls x 3 turns) gave a stamped first token.
    assert_eq!(r.added.count, 9, "{}", r.markdown());
    assert!(r.added.p50 > Duration::ZERO && r.added.max < Duration::from_secs(1));
    // Two ordinary turns per call had their time to first token taken; it includes
    // the fake LLM's own 20 ms.
    assert_eq!(r.ttft.count, 6);
    assert!(r.ttft.p50 >= Duration::from_millis(20));
    assert_eq!(r.interrupt_to_silence.count, 3);
    assert!(r.turns_per_sec > 0.0);
    assert!(r.baseline.rss > 0 && r.live.rss > 0 && r.peak_rss >= r.live.rss);
    let table = r.markdown();
    assert!(
        table.contains("| turns per second at saturation |"),
        "{table}"
    );
}
