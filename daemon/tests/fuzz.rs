//! Bounded fuzzing of everything a client's bytes reach before a method runs: the ZMTP
//! framing of the control and event sockets, and JSON-RPC request parsing. The case
//! counts are fixed so the run fits CI; the properties must hold for any input.

use std::time::Duration;

use djinn_daemon::Daemon;
use djinn_daemon::config::{ConfigLoader, Flags};
use djinn_daemon::rpc::{Request, Response};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeromq::{ReqSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9.é\\\\\" ]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An id as a client might write it: any number text JSON allows, any string, or not an id.
fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
        "\"[a-zA-Z0-9 é-]{0,16}\"",
        Just("null".to_owned()),
        json_value().prop_map(|v| v.to_string()),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_bytes_parse_or_are_refused_without_panicking(frame in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Request::parse(&frame);
    }

    #[test]
    fn any_json_parses_or_is_refused_without_panicking(value in json_value(), method in json_value(), params in json_value()) {
        let frame = json!({"jsonrpc": "2.0", "id": value, "method": method, "params": params});
        let _ = Request::parse(frame.to_string().as_bytes());
    }

    #[test]
    fn valid_ids_come_back_exactly_as_sent(id in id_text()) {
        let frame = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"daemon.ping"}}"#);
        match Request::parse(frame.as_bytes()) {
            Ok(request) => {
                let reply = Response::new(request.id, Ok(json!("pong"))).to_bytes();
                let reply = String::from_utf8(reply).unwrap();
                prop_assert_eq!(reply, format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"pong"}}"#));
            }
            Err(rejected) => {
                // Only arrays, objects and booleans are not ids.
                let first = id.as_bytes()[0];
                prop_assert!(matches!(first, b'[' | b'{' | b't' | b'f'), "{id} refused: {:?}", rejected.error);
            }
        }
    }
}

/// A ZMTP 3.0 NULL-mechanism greeting.
fn greeting() -> Vec<u8> {
    let mut g = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0x03, 0x00];
    g.extend(b"NULL");
    g.resize(64, 0);
    g
}

/// One frame as an attacker writes it: any flags, a length that may lie, a short body.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let length = prop_oneof![0u64..300, Just(1u64 << 40), Just(u64::MAX), any::<u64>(),];
    (
        any::<u8>(),
        length,
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(|(flags, length, body, long)| {
            let mut f = vec![flags];
            if long || flags & 0x02 != 0 {
                f.extend(length.to_be_bytes());
            } else {
                f.push(length as u8);
            }
            f.extend(body);
            f
        })
}

#[test]
fn zmtp_noise_after_a_greeting_never_takes_the_daemon_down() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("djinn.toml");
    std::fs::write(&config_path, "[audio]\nbackend = \"none\"\n").unwrap();
    let flags = Flags {
        config: Some(config_path),
        control: Some("tcp://127.0.0.1:0".into()),
        events: Some("tcp://127.0.0.1:0".into()),
        state_dir: Some(dir.path().join("state")),
        ..Flags::default()
    };
    let mut loader = ConfigLoader::new(flags);
    loader.system_config = dir.path().join("no-system-config.toml");
    let daemon = runtime.block_on(Daemon::start(loader)).unwrap();
    let ports: Vec<u16> = [daemon.control_endpoint(), daemon.events_endpoint()]
        .iter()
        .map(|e| e.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let control = daemon.control_endpoint().to_owned();

    let mut runner = proptest::test_runner::TestRunner::new(config(96));
    let noise = (0usize..2, prop::collection::vec(frame(), 1..6));
    runner
        .run(&noise, |(socket, frames)| {
            runtime.block_on(async {
                let mut stream = TcpStream::connect(("127.0.0.1", ports[socket]))
                    .await
                    .unwrap();
                stream.write_all(&greeting()).await.unwrap();
                let mut theirs = [0u8; 64];
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut theirs))
                        .await;
                for frame in frames {
                    if stream.write_all(&frame).await.is_err() {
                        break;
                    }
                }
            });
            Ok(())
        })
        .unwrap();

    // Whatever came before, the daemon answers.
    runtime.block_on(async {
        let mut socket = ReqSocket::new();
        socket.connect(&control).await.unwrap();
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#;
        socket.send(ZmqMessage::from(ping)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.recv())
            .await
            .expect("a reply within 5 s")
            .unwrap();
        assert_eq!(
            reply.get(0).unwrap().as_ref(),
            br#"{"jsonrpc":"2.0","id":1,"result":"pong"}"#
        );
        daemon.shutdown().trigger();
        tokio::time::timeout(Duration::from_secs(5), daemon.run())
            .await
            .expect("daemon stops")
            .unwrap();
    });
}
