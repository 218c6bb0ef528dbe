//! The control protocol on the wire: exact bytes for success and for each error code.
//!
//! Each test starts its own daemon in-process on unique ipc endpoints and talks to it with
//! raw ZeroMQ sockets, so what is checked is exactly what a client receives.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use djinn_daemon::Daemon;
use djinn_daemon::config::{ConfigLoader, Flags};
use serde_json::{Value, json};
use zeromq::{DealerSocket, ReqSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

struct TestDaemon {
    daemon: Option<Daemon>,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    async fn start(config: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("djinn.toml");
        std::fs::write(&config_path, config).unwrap();
        let flags = Flags {
            config: Some(config_path),
            control: Some(ipc(dir.path(), "control")),
            events: Some(ipc(dir.path(), "events")),
            state_dir: Some(dir.path().join("state")),
            ..Flags::default()
        };
        let mut loader = ConfigLoader::new(flags);
        loader.system_config = dir.path().join("no-system-config.toml");
        let daemon = Daemon::start(loader).await.unwrap();
        TestDaemon {
            daemon: Some(daemon),
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        self.daemon.as_ref().unwrap().control_endpoint().to_owned()
    }

    async fn req(&self) -> ReqSocket {
        let mut socket = ReqSocket::new();
        socket.connect(&self.endpoint()).await.unwrap();
        socket
    }

    async fn stop(mut self) {
        let daemon = self.daemon.take().unwrap();
        daemon.shutdown().trigger();
        tokio::time::timeout(Duration::from_secs(2), daemon.run())
            .await
            .expect("daemon stops within 2 s")
            .unwrap();
    }
}

fn ipc(dir: &Path, name: &str) -> String {
    format!("ipc://{}", dir.join(name).display())
}

async fn exchange(socket: &mut ReqSocket, frames: Vec<Bytes>) -> Vec<Bytes> {
    socket
        .send(ZmqMessage::try_from(frames).unwrap())
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.recv())
        .await
        .expect("a reply within 5 s")
        .unwrap();
    reply.into_vec()
}

/// Sends one frame and returns the reply frame as text.
async fn wire(socket: &mut ReqSocket, request: &str) -> String {
    let reply = exchange(socket, vec![Bytes::from(request.to_owned())]).await;
    assert_eq!(reply.len(), 1, "one reply frame");
    String::from_utf8(reply[0].to_vec()).unwrap()
}

#[tokio::test]
async fn success_and_every_error_code_on_the_wire() {
    // No audio: the offline driver would start the transport rolling as soon as it runs,
    // and the replies here are compared byte for byte.
    let daemon = TestDaemon::start("[audio]\nbackend = \"none\"\n").await;
    let mut s = daemon.req().await;
    let cases = [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":"pong"}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":340282366920938463463374607431768211457,"method":"daemon.ping"}"#,
            r#"{"jsonrpc":"2.0","id":340282366920938463463374607431768211457,"result":"pong"}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":-1.25e-300,"method":"daemon.ping"}"#,
            r#"{"jsonrpc":"2.0","id":-1.25e-300,"result":"pong"}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":"a-string-id","method":"daemon.ping","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":"a-string-id","result":"pong"}"#,
        ),
        (
            r#"{"#,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: EOF while parsing an object at line 1 column 1"}}"#,
        ),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}]"#,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: batches are not supported; send one request per message"}}"#,
        ),
        (
            r#"{"jsonrpc":"1.0","id":2,"method":"daemon.ping"}"#,
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32600,"message":"invalid request: \"jsonrpc\" must be \"2.0\""}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"no.such"}"#,
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"unknown method: no.such"}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"debug.panic","params":{"actor":"transport"}}"#,
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"unknown method: debug.panic"}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"transport.set","params":{"tempo":301}}"#,
            r#"{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"tempo: 301 BPM is out of range: djinn plays from 20 to 300 BPM","data":{"field":"tempo"}}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"transport.set","params":{"tempo":"fast"}}"#,
            r#"{"jsonrpc":"2.0","id":6,"error":{"code":-32602,"message":"tempo: expected a number, got a string","data":{"field":"tempo"}}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"transport.set","params":{"key":"H major"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"key: unreadable key \"H major\": expected a note and a scale, like \"F minor\" or \"C#m\"","data":{"field":"key"}}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"transport.set","params":{"swing":1}}"#,
            r#"{"jsonrpc":"2.0","id":8,"error":{"code":-32602,"message":"swing: unknown param; expected tempo, meter, key, scale, ramp_beats, source, master_clock","data":{"field":"swing"}}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":9,"method":"profile.set","params":{"name":"polka"}}"#,
            r#"{"jsonrpc":"2.0","id":9,"error":{"code":-32002,"message":"no profile named \"polka\"; loaded: classical, deep_house, downtempo_ambient, dub, experimental, hip_hop, jungle_dnb, meditation, rock, sleep, techno_minimal, trip_hop, uk_drill","data":{"field":"name"}}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":10,"method":"transport.set","params":{"tempo":123.4,"key":"F#","scale":"dorian","meter":"7/8"}}"#,
            r#"{"jsonrpc":"2.0","id":10,"result":{"tempo":123.4,"meter":"7/8","key":"F#","scale":"dorian","rolling":false,"sample_rate":48000,"position":{"frame":0,"bar":1,"beat":1,"tick":0},"clock":{"source":"internal","master_clock":false,"tempo":123.4,"lock":"idle","phase_error_ms":null,"jitter_ms":null,"alsa":null}}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":11,"method":"profile.set","params":{"name":"uk_drill"}}"#,
            r#"{"jsonrpc":"2.0","id":11,"result":{"profile":"uk_drill","tempo":142.0,"meter":"4/4","key":"F#","scale":"minor"}}"#,
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(wire(&mut s, request).await, expected, "request: {request}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_daemon_serves_on() {
    let daemon = TestDaemon::start("[control]\nmax_frame_bytes = 4096\n").await;
    let mut s = daemon.req().await;
    let padding = "x".repeat(5000);
    let request = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":{{"pad":"{padding}"}}}}"#
    );
    let size = request.len();
    assert_eq!(
        wire(&mut s, &request).await,
        format!(
            r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32600,"message":"invalid request: {size} bytes is over the 4096-byte limit"}}}}"#
        )
    );
    // Payload frames count towards the limit too.
    let small = Bytes::from_static(br#"{"jsonrpc":"2.0","id":2,"method":"daemon.ping"}"#);
    let reply = exchange(&mut s, vec![small.clone(), Bytes::from(vec![0u8; 4096])]).await;
    let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
    assert_eq!(reply["error"]["code"], -32600);
    let reply = exchange(&mut s, vec![small, Bytes::from(vec![0u8; 100])]).await;
    assert_eq!(
        &reply[0][..],
        br#"{"jsonrpc":"2.0","id":2,"result":"pong"}"#
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_token_guards_every_request() {
    let daemon = TestDaemon::start("[control]\ntoken = \"open sesame\"\n").await;
    let mut s = daemon.req().await;
    let cases = [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"unauthorized: this daemon requires a \"token\" member in every request"}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":"daemon.ping","token":"open sesamE"}"#,
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32001,"message":"unauthorized: wrong token"}}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"daemon.ping","token":"open sesame"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":"pong"}"#,
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(wire(&mut s, request).await, expected, "request: {request}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn dealer_clients_without_a_delimiter_are_answered_in_kind() {
    let daemon = TestDaemon::start("").await;
    let mut dealer = DealerSocket::new();
    dealer.connect(&daemon.endpoint()).await.unwrap();
    for id in 0..20 {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "daemon.ping"}).to_string();
        dealer.send(ZmqMessage::from(request)).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..20 {
        let reply = tokio::time::timeout(Duration::from_secs(5), dealer.recv())
            .await
            .unwrap()
            .unwrap()
            .into_vec();
        assert_eq!(reply.len(), 1, "no delimiter frame added for a DEALER");
        let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
        assert_eq!(reply["result"], "pong");
        ids.push(reply["id"].as_i64().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    daemon.stop().await;
}

#[tokio::test]
async fn fault_injection_is_reported_and_the_actor_comes_back() {
    let daemon = TestDaemon::start("[debug]\nfault_injection = true\n").await;
    let mut s = daemon.req().await;
    let set = r#"{"jsonrpc":"2.0","id":1,"method":"transport.set","params":{"tempo":99}}"#;
    wire(&mut s, set).await;
    let panic = r#"{"jsonrpc":"2.0","id":2,"method":"debug.panic","params":{"actor":"transport"}}"#;
    let reply: Value = serde_json::from_str(&wire(&mut s, panic).await).unwrap();
    assert_eq!(reply["result"]["panicked"], true, "{reply}");
    let status = r#"{"jsonrpc":"2.0","id":3,"method":"daemon.status"}"#;
    let mut restarts = Value::Null;
    for _ in 0..50 {
        let reply: Value = serde_json::from_str(&wire(&mut s, status).await).unwrap();
        restarts = reply["result"]["actors"]["transport"]["restarts"].clone();
        if restarts == 1 {
            assert_eq!(
                reply["result"]["transport"]["tempo"], 99.0,
                "state survived"
            );
            assert_eq!(reply["result"]["actors"]["transport"]["state"], "running");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(restarts, 1);
    daemon.stop().await;
}
