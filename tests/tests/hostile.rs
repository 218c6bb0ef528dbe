//! The control plane under hostile input: each test runs an attack against a real djinnd
//! and checks that the daemon lives, answers, and holds its memory.
//!
//! The peers here speak ZMTP by hand over plain TCP, because an attacker does: a real
//! ZeroMQ client would never send a frame header claiming a terabyte, or stop reading.

use std::time::{Duration, Instant};

use bytes::Bytes;
use djinn_tests::{Djinnd, Options};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// The TCP port of a `tcp://host:port` endpoint.
fn port(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {endpoint}"))
}

/// A ZMTP 3.0 greeting for the NULL mechanism, as the issue's reproduction sends it.
fn greeting() -> Vec<u8> {
    let mut g = vec![0xff];
    g.extend([0u8; 8]);
    g.extend([0x7f, 0x03, 0x00]);
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    g.extend(mechanism);
    g.extend([0u8; 32]);
    assert_eq!(g.len(), 64);
    g
}

/// A READY command announcing `socket_type`.
fn ready(socket_type: &str) -> Vec<u8> {
    let mut body = b"\x05READY\x0bSocket-Type".to_vec();
    body.extend((socket_type.len() as u32).to_be_bytes());
    body.extend(socket_type.as_bytes());
    let mut frame = vec![0x04, body.len() as u8];
    frame.extend(body);
    frame
}

/// One short message frame.
fn frame(body: &[u8], more: bool) -> Vec<u8> {
    assert!(body.len() < 256);
    let mut f = vec![u8::from(more), body.len() as u8];
    f.extend(body);
    f
}

/// Connects to a socket of djinnd and exchanges greetings (and READY when `as_type` is
/// given), leaving the stream where the attack begins.
async fn handshake(port: u16, as_type: Option<&str>) -> TcpStream {
    handshake_with(port, as_type, None).await
}

/// [`handshake`] with the client's receive buffer set to `receive_buffer` bytes.
async fn handshake_with(
    port: u16,
    as_type: Option<&str>,
    receive_buffer: Option<u32>,
) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let mut stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect");
    stream.write_all(&greeting()).await.unwrap();
    let mut theirs = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut theirs))
        .await
        .expect("djinnd greets within 10 s")
        .expect("djinnd's greeting");
    assert_eq!(theirs[0], 0xff, "a ZMTP greeting");
    if let Some(socket_type) = as_type {
        stream.write_all(&ready(socket_type)).await.unwrap();
        // djinnd's READY: a short command frame.
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x04, "a READY command");
        let mut body = vec![0u8; head[1] as usize];
        stream.read_exact(&mut body).await.unwrap();
        assert!(body.starts_with(b"\x05READY"));
    }
    stream
}

/// Whether djinnd closed `stream` within `within` (reading until end of stream or reset).
async fn closed_by_peer(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn ping(daemon: &Djinnd) {
    let mut client = daemon.client();
    assert_eq!(
        client.call("daemon.ping", Value::Null).await.unwrap(),
        "pong",
        "djinnd answers:\n{}",
        daemon.log()
    );
}

/// CPU time djinnd has used so far, in clock ticks (user + system).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("djinnd runs");
    // The fields after the command name (which may hold spaces) start after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as u64 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_headers_over_the_limit_drop_the_peer_before_anything_is_allocated() {
    for token in [None, Some("s3cret")] {
        let daemon = Djinnd::start_with(Options {
            tcp: true,
            env: token
                .map(|t| vec![("DJINN_TOKEN".to_owned(), t.to_owned())])
                .unwrap_or_default(),
            ..Options::default()
        });
        let baseline = daemon.rss_kib();
        for endpoint in [&daemon.control, &daemon.events] {
            // The reproduction: a long command frame of 2^40 bytes right after the greeting.
            let mut stream = handshake(port(endpoint), None).await;
            let mut header = vec![0x06];
            header.extend((1u64 << 40).to_be_bytes());
            stream.write_all(&header).await.unwrap();
            assert!(
                closed_by_peer(&mut stream, Duration::from_secs(10)).await,
                "{endpoint}: a 2^40-byte command header closes the connection"
            );
            // The same for a message frame after a complete handshake, for each frame
            // size up to the largest a length field can say.
            for claimed in [1u64 << 30, 1 << 40, u64::MAX] {
                let as_type = if endpoint == &daemon.control {
                    "DEALER"
                } else {
                    "SUB"
                };
                let mut stream = handshake(port(endpoint), Some(as_type)).await;
                let mut header = vec![0x02];
                header.extend(claimed.to_be_bytes());
                stream.write_all(&header).await.unwrap();
                // Keep sending body bytes: they must not be held.
                let chunk = vec![0x5a; 1 << 20];
                for _ in 0..8 {
                    if stream.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                assert!(
                    closed_by_peer(&mut stream, Duration::from_secs(10)).await,
                    "{endpoint}: a {claimed}-byte frame header closes the connection"
                );
            }
        }
        // Random bytes after a greeting, many times over.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in 0..40 {
            let endpoint = if i % 2 == 0 {
                &daemon.control
            } else {
                &daemon.events
            };
            let mut stream = handshake(port(endpoint), None).await;
            let noise: Vec<u8> = (0..256)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = stream.write_all(&noise).await;
        }
        let mut client = match token {
            Some(t) => djinn_daemon::client::Client::new(
                &daemon.control,
                Some(t.to_owned()),
                Duration::from_secs(5),
            ),
            None => daemon.client(),
        };
        assert_eq!(
            client.call("daemon.ping", Value::Null).await.unwrap(),
            "pong",
            "{}",
            daemon.log()
        );
        let growth = daemon.rss_kib().saturating_sub(baseline);
        assert!(
            growth < 32 * 1024,
            "RSS grew {growth} KiB under oversized frames"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_little_over_the_limit_still_gets_an_error_reply() {
    let daemon = Djinnd::start_with(Options {
        tcp: true,
        config: "[control]\nmax_frame_bytes = 4096\nmax_in_flight_bytes = 65536\n".into(),
        ..Options::default()
    });
    let mut client = daemon.client();
    let reply = client
        .exchange(vec![
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":3,"method":"daemon.ping"}"#),
            Bytes::from(vec![0u8; 8192]),
        ])
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply[0]).unwrap();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    ping(&daemon).await;
}

/// Events a subscriber gets while others have stopped reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_stop_reading_cost_a_bounded_queue_and_are_counted() {
    let daemon = Djinnd::start_with(Options {
        tcp: true,
        config: "[control]\nevents_queue = 200\n".into(),
        ..Options::default()
    });
    // Ten subscribers to every topic that never read another byte, with small receive
    // buffers so that what they hold back piles up on djinnd's side quickly.
    let mut stuck = Vec::new();
    for _ in 0..10 {
        let mut stream = handshake_with(port(&daemon.events), Some("SUB"), Some(4096)).await;
        stream.write_all(&frame(b"\x01", false)).await.unwrap();
        stuck.push(stream);
    }
    let mut live = daemon.events(&["transport"]).await;
    let baseline = daemon.rss_kib();

    // Each transport.set publishes an event; fill the kernel's buffers and then the
    // queues many times over. Events carry a padded-out key name to make them large.
    let mut client = daemon.client();
    let sent = 6000;
    let mut last = 0.0;
    for i in 0..sent {
        let tempo = 90.0 + (i % 60) as f64;
        client
            .call("transport.set", json!({ "tempo": tempo }))
            .await
            .unwrap();
        last = tempo;
    }
    // The reading subscriber saw the last change: one stuck peer never holds up others.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        let (_, event) = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("events keep coming")
            .unwrap();
        seen = event["data"]["tempo"].as_f64() == Some(last);
    }
    assert!(seen, "the live subscriber got the last transport event");

    let status = client.call("daemon.status", Value::Null).await.unwrap();
    let dropped = status["control"]["events_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "drops are counted: {}", status["control"]);
    assert!(status["control"]["subscribers"].as_u64().unwrap() >= 11);
    let growth = daemon.rss_kib().saturating_sub(baseline);
    // 10 queues of 200 events of well under 1 KiB each, and what the allocator keeps.
    assert!(
        growth < 24 * 1024,
        "RSS grew {growth} KiB with ten stuck subscribers over {sent} events"
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_dropped_after_the_handshake_deadline() {
    let daemon = Djinnd::start_with(Options {
        tcp: true,
        config: "[control]\nmax_connections = 20\n".into(),
        ..Options::default()
    });
    // A client connected before the flood keeps being served.
    let mut early = daemon.client();
    assert_eq!(
        early.call("daemon.ping", Value::Null).await.unwrap(),
        "pong"
    );

    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(
            TcpStream::connect(("127.0.0.1", port(&daemon.control)))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        early.call("daemon.ping", Value::Null).await.unwrap(),
        "pong"
    );
    // Connections over the cap are closed at once.
    let mut refused = 0;
    for stream in &mut idle {
        if closed_by_peer(stream, Duration::from_millis(200)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 40,
        "{refused} of 60 idle connections closed at once"
    );
    // Those within it are dropped once the handshake deadline passes.
    let started = Instant::now();
    for stream in &mut idle {
        assert!(closed_by_peer(stream, Duration::from_secs(30)).await);
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(idle);
    ping(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_daemon_backs_off_instead_of_spinning() {
    let daemon = Djinnd::start_with(Options {
        tcp: true,
        config: "[control]\nmax_connections = 4000\n".into(),
        ..Options::default()
    });
    let mut early = daemon.client();
    assert_eq!(
        early.call("daemon.ping", Value::Null).await.unwrap(),
        "pong"
    );
    // Leave djinnd few descriptors, then connect more idle clients than it has left.
    let limit = libc::rlimit {
        rlim_cur: 128,
        rlim_max: 128,
    };
    // SAFETY: prlimit on our own child with a valid rlimit; no memory is shared.
    let rc = unsafe {
        libc::prlimit(
            daemon.pid(),
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(
            TcpStream::connect(("127.0.0.1", port(&daemon.control)))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(daemon.pid());
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = (cpu_ticks(daemon.pid()) - before) as f64 / ticks_per_second() as f64;
    let share = used / wall.elapsed().as_secs_f64();
    // A busy accept loop takes a whole core; backing off takes next to nothing.
    assert!(
        share < 0.25,
        "djinnd used {:.0} % of a core with its descriptors exhausted",
        share * 100.0
    );
    assert_eq!(
        early.call("daemon.ping", Value::Null).await.unwrap(),
        "pong"
    );
    drop(idle);
    // Once the idle clients are gone (or timed out), new ones are served again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut late =
            djinn_daemon::client::Client::new(&daemon.control, None, Duration::from_secs(2));
        match late.call("daemon.ping", Value::Null).await {
            Ok(pong) => {
                assert_eq!(pong, "pong");
                break;
            }
            Err(e) if Instant::now() < deadline => eprintln!("not yet: {e}"),
            Err(e) => panic!("no new client served after the flood: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_replies_echo_each_request_id() {
    let daemon = Djinnd::start_with(Options {
        tcp: true,
        config: "[control]\nmax_in_flight = 1\n".into(),
        ..Options::default()
    });
    let mut dealer = DealerSocket::new();
    dealer.connect(&daemon.control).await.unwrap();
    // A slow request takes the one slot (a song renders for a while).
    let slow = json!({"jsonrpc": "2.0", "id": "slow", "method": "generate.song",
                      "params": {"prompt": "calm piano", "seconds": 240}});
    dealer
        .send(ZmqMessage::from(slow.to_string()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids = [json!(1), json!("two"), json!(18446744073709551615u64)];
    for id in &ids {
        let ping = json!({"jsonrpc": "2.0", "id": id, "method": "daemon.ping"});
        dealer
            .send(ZmqMessage::from(ping.to_string()))
            .await
            .unwrap();
    }
    let mut busy = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while busy.len() < ids.len() && Instant::now() < deadline {
        let reply = tokio::time::timeout(Duration::from_secs(120), dealer.recv())
            .await
            .expect("replies")
            .unwrap();
        let reply: Value = serde_json::from_slice(reply.get(0).unwrap()).unwrap();
        if reply["id"] != "slow" {
            assert_eq!(reply["error"]["code"], -32005, "{reply}");
            busy.push(reply["id"].clone());
        }
    }
    let mut busy: Vec<String> = busy.iter().map(Value::to_string).collect();
    let mut ids: Vec<String> = ids.iter().map(Value::to_string).collect();
    busy.sort();
    ids.sort();
    assert_eq!(busy, ids, "each busy reply carries its request's id");
}

/// Sends one HTTP/1.1 request and returns the status line and headers, leaving the body
/// to be read from the stream.
async fn http(port: u16, request: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert_eq!(n, 1, "the response head is complete: {head:?}");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_events_and_requests_over_http_need_the_token() {
    let http_port = djinn_tests::free_port();
    let _daemon = Djinnd::start_with(Options {
        tcp: true,
        args: vec!["--http".into(), format!("127.0.0.1:{http_port}")],
        env: vec![("DJINN_TOKEN".into(), "s3cret".into())],
        ..Options::default()
    });
    // No token, or a wrong one: no events.
    for auth in ["", "Authorization: Bearer wrong\r\n"] {
        let (_, head) = http(
            http_port,
            &format!("GET /events HTTP/1.1\r\nHost: djinn\r\n{auth}\r\n"),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    }
    // With it, transport events stream in as Server-Sent Events.
    let (mut stream, head) = http(
        http_port,
        "GET /events?topics=transport HTTP/1.1\r\nHost: djinn\r\nAuthorization: Bearer s3cret\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    // POST /rpc: refused without the token, answered with it (header or member).
    let rpc = |auth: &str, body: &str| {
        format!(
            "POST /rpc HTTP/1.1\r\nHost: djinn\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let set = r#"{"jsonrpc":"2.0","id":12345678901234567890123,"method":"transport.set","params":{"tempo":133}}"#;
    let (mut refused, _) = http(http_port, &rpc("", set)).await;
    let mut body = String::new();
    refused.read_to_string(&mut body).await.unwrap();
    assert!(body.contains("-32001"), "{body}");
    let (mut answered, _) = http(http_port, &rpc("Authorization: Bearer s3cret\r\n", set)).await;
    let mut body = String::new();
    answered.read_to_string(&mut body).await.unwrap();
    assert!(
        body.starts_with(r#"{"jsonrpc":"2.0","id":12345678901234567890123,"result":"#),
        "{body}"
    );
    // The change arrives on the event stream.
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    while !seen.contains("\"tempo\":133") && Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("events")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(seen.contains("event: transport"), "{seen}");
    assert!(seen.contains("\"tempo\":133"), "{seen}");
}

#[test]
fn the_zeromq_event_socket_never_binds_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(djinn_tests::bin("djinnd"))
        .args([
            "--events",
            "tcp://0.0.0.0:0",
            "--control",
            "ipc:///nonexistent/x",
        ])
        .arg("--state-dir")
        .arg(dir.path())
        .env("DJINN_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GET /events"), "{stderr}");
}
