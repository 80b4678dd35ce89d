//! Push latency benchmark: time from the start of a send request to the notification's arrival
//! at a push gateway on 127.0.0.1, and at a subscriber of the built-in distributor. Ignored in
//! normal runs; run with
//! `cargo test --release -p feldpost --test push_bench -- --ignored --nocapture`.

mod common;
mod push_common;

use std::time::{Duration, Instant};

use common::TestServer;
use push_common::{FakeGateway, set_pusher, shared_room};
use serde_json::Value;

const MESSAGES: usize = 300;
const FANOUT_MEMBERS: usize = 50;
const FANOUT_MESSAGES: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        v.len(),
        percentile(&v, 0.50).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn bench_server() -> TestServer {
    TestServer::start_with(|c| {
        c.outbound.allow_ranges = vec!["127.0.0.0/8".parse().expect("range")];
        c.push.allow_http_gateways = true;
        c.log.level = "warn".into();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn push_latency() {
    // 1. One recipient, an external gateway over HTTP.
    let gw = FakeGateway::start().await;
    let s = bench_server().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    set_pusher(&s, &b, &gw.url, "org.example.app", "bobkey").await;
    let mut lat = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let start = Instant::now();
        let e = s.send_text(&a, &room, &format!("m{i}")).await;
        let got = gw.wait_for(i + 1, Duration::from_secs(10)).await;
        let (at, v) = got.last().expect("delivered");
        assert_eq!(v["notification"]["event_id"], e);
        lat.push(at.duration_since(start));
    }
    report("gateway (HTTP, 1 recipient)", lat);

    // 2. The built-in gateway and distributor to a JSON-stream subscriber.
    let topic = "upBenchTopic0001";
    set_pusher(
        &s,
        &b,
        &s.url("/_matrix/push/v1/notify"),
        "org.example.up",
        &s.url(&format!("/_feldpost/ntfy/{topic}")),
    )
    .await;
    let mut sub = s
        .http
        .get(s.url(&format!("/_feldpost/ntfy/{topic}/json")))
        .send()
        .await
        .expect("subscribe");
    let mut buf = String::new();
    let mut lat = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let start = Instant::now();
        let e = s.send_text(&a, &room, &format!("d{i}")).await;
        'wait: loop {
            while let Some(pos) = buf.find('\n') {
                let line: String = buf.drain(..=pos).collect();
                let v: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
                if v["event"] == "message" && v["message"].as_str().is_some_and(|m| m.contains(&e))
                {
                    lat.push(start.elapsed());
                    break 'wait;
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), sub.chunk())
                .await
                .expect("in time")
                .expect("stream")
                .expect("open");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    report("distributor (own gateway, JSON stream)", lat);

    // 3. Fan-out: a room of FANOUT_MEMBERS, each with a pusher; latency of every delivery.
    let gw2 = FakeGateway::start().await;
    let mut members = vec![];
    for i in 0..FANOUT_MEMBERS {
        members.push(s.register(&format!("m{i}")).await);
    }
    let big = s
        .create_room(&a, serde_json::json!({"preset": "public_chat"}))
        .await;
    for (i, m) in members.iter().enumerate() {
        s.join(m, &big).await;
        set_pusher(&s, m, &gw2.url, "org.example.app", &format!("k{i}")).await;
    }
    // Let the join events' evaluation drain before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = gw2.received().await.len();
    let mut lat = Vec::new();
    for i in 0..FANOUT_MESSAGES {
        let start = Instant::now();
        let e = s.send_text(&a, &big, &format!("f{i}")).await;
        let want = base + (i + 1) * FANOUT_MEMBERS;
        let got = gw2.wait_for(want, Duration::from_secs(20)).await;
        for (at, v) in got.iter().skip(want - FANOUT_MEMBERS) {
            if v["notification"]["event_id"] == e {
                lat.push(at.duration_since(start));
            }
        }
    }
    report(
        &format!("gateway (HTTP, fan-out to {FANOUT_MEMBERS} recipients, every delivery)"),
        lat,
    );
}
