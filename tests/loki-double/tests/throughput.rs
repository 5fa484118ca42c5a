//! How many lines a second the double takes in, so a benchmark of the
//! agent into it knows the double is not the bottleneck. Ignored by
//! default; run it in release mode:
//! `cargo test --release -p loki-double --test throughput -- --ignored --nocapture`

mod common;

use std::time::Instant;

use common::*;
use loki_double::{Config, Double};

fn run(keep_entries: bool) {
    let d = Double::start(Config { keep_entries, ..Config::default() }).unwrap();
    let (batches, per_batch, streams) = (200, 5_000, 100);
    let t = now_ns();
    let bodies: Vec<Vec<u8>> = (0..batches)
        .map(|b| {
            let labels: Vec<String> =
                (0..streams).map(|s| format!("{{container=\"c{s}\", host=\"h\"}}")).collect();
            let per_stream = per_batch / streams;
            let data: Vec<(&str, Vec<E>)> = labels
                .iter()
                .enumerate()
                .map(|(s, l)| {
                    let es = (0..per_stream)
                        .map(|i| {
                            let n = (b * per_stream + i) as i64;
                            e_sm(
                                t + n,
                                &format!("c{s} {n} stdout {}", "x".repeat(60)),
                                &[("container_id", "0123456789ab")],
                            )
                        })
                        .collect();
                    (l.as_str(), es)
                })
                .collect();
            snappy(&protobuf(&data))
        })
        .collect();
    let mut c = Client::plain(d.addr());
    let t0 = Instant::now();
    for b in &bodies {
        assert_eq!(c.push(b, &[("Content-Type", "application/x-protobuf")]).status, 204);
    }
    let el = t0.elapsed();
    let lines = (batches * per_batch) as f64;
    assert_eq!(d.stats().entries_stored, lines as u64);
    println!(
        "keep_entries={keep_entries}: {lines} lines in {:.3} s = {:.2} M lines/s (wall, one connection)",
        el.as_secs_f64(),
        lines / el.as_secs_f64() / 1e6
    );
}

#[test]
#[ignore]
fn lines_per_second() {
    run(false);
    run(true);
}
