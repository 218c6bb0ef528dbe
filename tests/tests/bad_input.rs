//! Bad input never hurts the daemon: 10,000+ malformed and random frames from several
//! clients at once, each answered with the right JSON-RPC error, then a healthy status and
//! memory that did not keep growing.

use std::time::Duration;

use bytes::Bytes;
use djinn_tests::{Djinnd, Options};
use serde_json::Value;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const CLIENTS: usize = 4;
const FRAMES_PER_CLIENT: usize = 2_600;
// 4 clients x 50 stays under the daemon's default of 256 requests in flight.
const BATCH: usize = 50;
const MAX_FRAME: usize = 64 * 1024;

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One bad request and the error codes it may be answered with.
fn bad_request(noise: &mut Noise) -> (Vec<Bytes>, &'static [i64]) {
    let one = |text: String| vec![Bytes::from(text)];
    match noise.below(12) {
        0 => {
            let len = noise.below(2000) + 1;
            (vec![Bytes::from(noise.bytes(len))], &[-32700, -32600])
        }
        1 => {
            let full = r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":{}}"#;
            let cut = noise.below(full.len() - 1) + 1;
            (one(full[..cut].to_owned()), &[-32700])
        }
        2 => {
            let values = [
                "42", "\"text\"", "null", "true", "[]", "[1,2,3]", "{}", "-0.5e9",
            ];
            (one(values[noise.below(values.len())].to_owned()), &[-32600])
        }
        3 => (one(r#"{"id":7,"method":"daemon.ping"}"#.into()), &[-32600]),
        4 => (
            one(format!(
                r#"{{"jsonrpc":"2.0","id":{},"method":"x.{}"}}"#,
                noise.below(1000),
                noise.next()
            )),
            &[-32601],
        ),
        5 => (
            one(
                r#"{"jsonrpc":"2.0","id":1,"method":"transport.set","params":{"tempo":"fast"}}"#
                    .into(),
            ),
            &[-32602],
        ),
        6 => (
            one(
                r#"{"jsonrpc":"2.0","id":1,"method":"transport.set","params":{"tempo":1e308}}"#
                    .into(),
            ),
            &[-32602],
        ),
        7 => (
            one(r#"{"jsonrpc":"2.0","id":1,"method":"profile.set","params":{"name":42}}"#.into()),
            &[-32602],
        ),
        8 => (
            one(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"daemon.ping"}"#.into()),
            &[-32600],
        ),
        9 => (
            one(r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":[1,2]}"#.into()),
            &[-32602],
        ),
        10 => {
            // Over the frame limit: the request plus a large payload frame.
            let head = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#);
            (
                vec![head, Bytes::from(vec![0xAB; MAX_FRAME + 1])],
                &[-32600],
            )
        }
        _ => {
            // Valid UTF-8 that is almost JSON.
            let junk: String = (0..noise.below(300) + 1)
                .map(|_| ['{', '}', '"', ':', ',', 'a', '1', ' ', '[', '\\'][noise.below(10)])
                .collect();
            (one(junk), &[-32700, -32600])
        }
    }
}

async fn hammer(endpoint: String, seed: u64) -> usize {
    let mut socket = DealerSocket::new();
    socket.connect(&endpoint).await.unwrap();
    let mut noise = Noise(seed);
    let mut answered = 0;
    for _ in 0..FRAMES_PER_CLIENT / BATCH {
        let mut expected = Vec::new();
        for _ in 0..BATCH {
            let (frames, codes) = bad_request(&mut noise);
            socket
                .send(ZmqMessage::try_from(frames).unwrap())
                .await
                .unwrap();
            expected.push(codes);
        }
        // Replies come back in any order (each request has its own task); check that every
        // one is an error with one of the codes bad input may earn.
        let allowed: Vec<i64> = expected.iter().flat_map(|c| c.iter().copied()).collect();
        for _ in 0..BATCH {
            let reply = tokio::time::timeout(Duration::from_secs(10), socket.recv())
                .await
                .expect("every bad frame is answered")
                .unwrap()
                .into_vec();
            let body = reply
                .iter()
                .rev()
                .find(|f| !f.is_empty())
                .expect("a reply body");
            let reply: Value = serde_json::from_slice(body).expect("replies are JSON");
            assert_eq!(reply["jsonrpc"], "2.0");
            let code = reply["error"]["code"]
                .as_i64()
                .unwrap_or_else(|| panic!("{reply}"));
            assert!(allowed.contains(&code), "unexpected {reply}");
            answered += 1;
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_bad_frames_from_four_clients_leave_the_daemon_healthy() {
    let daemon = Djinnd::start_with(Options {
        config: format!("[control]\nmax_frame_bytes = {MAX_FRAME}\n"),
        ..Options::default()
    });
    // Warm up allocator arenas and socket buffers, then take the baseline.
    assert_eq!(hammer(daemon.control.clone(), 1).await, FRAMES_PER_CLIENT);
    let baseline = daemon.rss_kib();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(hammer(daemon.control.clone(), 0x9E37_79B9 + i as u64)))
        .collect();
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    assert!(answered >= 10_000, "{answered}");
    let after = daemon.rss_kib();

    let mut client = daemon.client();
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["profile"], "techno_minimal");
    assert_eq!(status["actors"]["transport"]["state"], "running");
    let rejected = status["control"]["rejected"].as_u64().unwrap();
    assert!(
        rejected >= (answered + FRAMES_PER_CLIENT) as u64,
        "{status}"
    );
    assert_eq!(
        client.call("daemon.ping", Value::Null).await.unwrap(),
        "pong"
    );

    let growth = after.saturating_sub(baseline);
    assert!(
        growth < 16 * 1024,
        "RSS grew {growth} KiB ({baseline} -> {after} KiB) over {answered} bad frames"
    );
    eprintln!("RSS {baseline} -> {after} KiB over {answered} bad frames");
}
