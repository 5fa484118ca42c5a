//! Many concurrent follow streams: they must all work, and idle ones must
//! cost no CPU (no busy loop, no per-iteration scan of every stream).

mod common;

use std::time::{Duration, Instant};

use common::*;
use docker_double::{raise_fd_limit, Config, ContainerSpec, Double, Stream};

const WAIT: Duration = Duration::from_secs(60);

/// Containers, one follow stream each, heads read.
fn open_streams(d: &Double, n: usize, prefix: &str) -> (Vec<String>, Vec<Client>) {
    // Each stream holds two descriptors in this process: ours and the
    // server's end.
    let need = 2 * n as u64 + 512;
    let limit = raise_fd_limit(need).expect("read the open-files limit");
    assert!(limit >= need, "open-files limit {limit} is below the {need} this test needs (ulimit -n)");
    let ids: Vec<String> =
        (0..n).map(|i| d.create_and_start(ContainerSpec::new(format!("{prefix}{i:05}")))).collect();
    let mut clients = Vec::with_capacity(n);
    for id in &ids {
        let mut c = Client::connect(d.socket());
        c.send(&format!("/v1.41/containers/{id}/logs?stdout=1&stderr=1&follow=1&timestamps=1"));
        clients.push(c);
    }
    for c in &mut clients {
        assert_eq!(c.head().status, 200);
    }
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == n));
    (ids, clients)
}

#[test]
fn two_thousand_follow_streams() {
    const N: usize = 2000;
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let t = Instant::now();
    let (ids, mut clients) = open_streams(&d, N, "s");
    let opened = t.elapsed();

    let t = Instant::now();
    for id in &ids {
        d.write(id, Stream::Stdout, format!("hello {id}").as_bytes());
    }
    for (c, id) in clients.iter_mut().zip(&ids) {
        let (stream, p) = one_frame(&c.chunk().unwrap().expect("a line"));
        assert_eq!(stream, 1);
        assert_eq!(split_ts(&p).1, format!("hello {id}\n").as_bytes());
    }
    let delivered = t.elapsed();

    let t = Instant::now();
    for id in &ids {
        d.stop(id);
    }
    for c in &mut clients {
        assert_eq!(c.chunk().unwrap(), None, "terminating chunk");
    }
    assert!(d.wait_until(WAIT, |s| s.log_streams_open == 0));
    let ended = t.elapsed();
    drop(clients);
    assert!(d.wait_until(WAIT, |s| s.connections_open == 0));
    let s = d.stats();
    assert_eq!(s.messages_sent, N as u64);
    assert_eq!(s.logs_requests_total, N as u64);
    eprintln!(
        "{N} follow streams: opened in {opened:?}, one line each delivered in {delivered:?}, \
         ended in {ended:?}; server CPU {:?}",
        d.server_cpu_time()
    );
}

#[test]
fn a_thousand_idle_streams_cost_no_cpu() {
    const N: usize = 1000;
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let (ids, mut clients) = open_streams(&d, N, "i");
    // Let the opening settle, then measure a quiet second.
    std::thread::sleep(Duration::from_millis(100));
    let before = d.server_cpu_time().expect("server thread CPU time");
    std::thread::sleep(Duration::from_secs(1));
    let idle = d.server_cpu_time().unwrap() - before;
    eprintln!("{N} idle follow streams: server thread used {idle:?} of CPU in 1 s");
    assert!(idle < Duration::from_millis(20), "busy while idle: {idle:?}");

    // Still alive after the quiet period.
    d.write(&ids[N / 2], Stream::Stdout, b"wake up");
    let (_, p) = one_frame(&clients[N / 2].chunk().unwrap().unwrap());
    assert_eq!(split_ts(&p).1, b"wake up\n");
}
