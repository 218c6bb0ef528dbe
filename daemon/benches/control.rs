//! The control plane's hot path: validating a request, encoding a reply, and a whole
//! `daemon.ping` round trip through the ROUTER socket over ipc.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use djinn_daemon::Daemon;
use djinn_daemon::config::{ConfigLoader, Flags};
use djinn_daemon::rpc::{self, Request, Response};
use serde_json::json;
use zeromq::{ReqSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

fn parsing(c: &mut Criterion) {
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#;
    let set = br#"{"jsonrpc":"2.0","id":"abc","method":"transport.set","params":{"tempo":128,"key":"F minor","meter":"4/4"},"token":"secret"}"#;
    c.bench_function("rpc/parse ping", |b| {
        b.iter(|| Request::parse(black_box(ping)))
    });
    c.bench_function("rpc/parse transport.set", |b| {
        b.iter(|| Request::parse(black_box(set)))
    });
    c.bench_function("rpc/parse garbage", |b| {
        b.iter(|| Request::parse(black_box(b"\x00\x01 not json at all")))
    });
    let reply = Response::new(rpc::peek_id(ping), Ok(json!("pong")));
    c.bench_function("rpc/encode pong", |b| {
        b.iter(|| black_box(&reply).to_bytes())
    });
}

fn round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut socket) = runtime.block_on(async {
        let flags = Flags {
            control: Some(format!("ipc://{}", dir.path().join("control").display())),
            events: Some(format!("ipc://{}", dir.path().join("events").display())),
            state_dir: Some(dir.path().join("state")),
            ..Flags::default()
        };
        let mut loader = ConfigLoader::new(flags);
        loader.system_config = dir.path().join("none.toml");
        let daemon = Daemon::start(loader).await.unwrap();
        let mut socket = ReqSocket::new();
        socket.connect(daemon.control_endpoint()).await.unwrap();
        (daemon, socket)
    });
    let request = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#);
    c.bench_function("control/daemon.ping round trip (ipc)", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    socket
                        .send(ZmqMessage::from(request.clone()))
                        .await
                        .unwrap();
                    black_box(socket.recv().await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    daemon.shutdown().trigger();
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(2), daemon.run()).await;
    });
}

criterion_group!(benches, parsing, round_trip);
criterion_main!(benches);
