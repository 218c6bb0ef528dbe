//! A measuring JACK client for the end-to-end tests: records the absolute frame time of
//! every MIDI event on one port and of every onset on one audio port, as JSON lines.
//!
//! `djinn-jack-probe [--midi PORT]... [--audio PORT] [--threshold LEVEL] --seconds S`
//!
//! Prints `{"ready":true}` once connected, then one line per event:
//! `{"frame":F,"midi":[b0,...]}` or `{"frame":F,"onset":peak}`, and after S seconds
//! `{"xruns":N}`, the xruns the server reported meanwhile, and exits. An onset is the first
//! sample above the threshold after at least 1,000 quiet frames.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jack::{AudioIn, Client, ClientOptions, Control, MidiIn, ProcessScope};

/// Counts the xruns the server reports.
struct Xruns(Arc<AtomicU64>);

impl jack::NotificationHandler for Xruns {
    fn xrun(&mut self, _: &Client) -> Control {
        self.0.fetch_add(1, Ordering::Relaxed);
        Control::Continue
    }
}

enum Seen {
    Midi(u64, [u8; 3], usize),
    Onset(u64, f32),
}

fn main() {
    let mut midi = Vec::new();
    let mut audio = None;
    let mut threshold = 0.01f32;
    let mut seconds = 10.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&flag));
        match flag.as_str() {
            "--midi" => midi.push(value),
            "--audio" => audio = Some(value),
            "--threshold" => threshold = value.parse().unwrap_or_else(|_| usage(&flag)),
            "--seconds" => seconds = value.parse().unwrap_or_else(|_| usage(&flag)),
            _ => usage(&flag),
        }
    }
    let (client, _) = Client::new("djinn_probe", ClientOptions::NO_START_SERVER)
        .unwrap_or_else(|e| fail(&format!("no JACK server: {e}")));
    let midi_in = client
        .register_port("midi_in", MidiIn::default())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let audio_in = client
        .register_port("audio_in", AudioIn::default())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let (tx, rx) = mpsc::sync_channel::<Seen>(1 << 16);
    let mut quiet = 1_000usize;
    let process = move |_: &Client, ps: &ProcessScope| -> Control {
        let start = u64::from(ps.last_frame_time());
        for event in midi_in.iter(ps) {
            let mut bytes = [0u8; 3];
            let len = event.bytes.len().min(3);
            bytes[..len].copy_from_slice(&event.bytes[..len]);
            let _ = tx.try_send(Seen::Midi(start + u64::from(event.time), bytes, len));
        }
        for (i, &s) in audio_in.as_slice(ps).iter().enumerate() {
            if s.abs() > threshold {
                if quiet >= 1_000 {
                    let _ = tx.try_send(Seen::Onset(start + i as u64, s));
                }
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
        Control::Continue
    };
    let xruns = Arc::new(AtomicU64::new(0));
    let active = client
        .activate_async(
            Xruns(xruns.clone()),
            jack::contrib::ClosureProcessHandler::new(process),
        )
        .unwrap_or_else(|e| fail(&e.to_string()));
    let me = active.as_client().name().to_owned();
    for source in &midi {
        active
            .as_client()
            .connect_ports_by_name(source, &format!("{me}:midi_in"))
            .unwrap_or_else(|e| fail(&format!("connect {source}: {e}")));
    }
    if let Some(source) = &audio {
        active
            .as_client()
            .connect_ports_by_name(source, &format!("{me}:audio_in"))
            .unwrap_or_else(|e| fail(&format!("connect {source}: {e}")));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{{\"ready\":true}}");
    let _ = out.flush();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(Seen::Midi(frame, bytes, len)) => {
                let bytes: Vec<String> = bytes[..len].iter().map(u8::to_string).collect();
                let _ = writeln!(out, "{{\"frame\":{frame},\"midi\":[{}]}}", bytes.join(","));
            }
            Ok(Seen::Onset(frame, peak)) => {
                let _ = writeln!(out, "{{\"frame\":{frame},\"onset\":{peak}}}");
            }
            Err(_) => {}
        }
        let _ = out.flush();
    }
    let _ = writeln!(out, "{{\"xruns\":{}}}", xruns.load(Ordering::Relaxed));
    let _ = out.flush();
    drop(active);
}

fn usage(flag: &str) -> ! {
    fail(&format!(
        "bad flag {flag}: djinn-jack-probe [--midi PORT]... [--audio PORT] [--threshold LEVEL] --seconds S"
    ))
}

fn fail(message: &str) -> ! {
    eprintln!("djinn-jack-probe: {message}");
    std::process::exit(2)
}
