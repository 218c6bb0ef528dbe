//! The clock's realtime paths: the follower taking one tick, the sender planning one
//! period, and the mixer following an external clock for a 64-frame period with a tick in
//! it (the period split at the tick, 16 layers, master chain), against the same period on
//! its own clock.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use djinn_engine::clock::{ClockFollower, ClockMessage, ClockSender};
use djinn_engine::mix::{
    ClockSource, Command, Group, LayerAudio, LayerParams, OutputBuffers, Processor, Quantize,
};
use djinn_engine::transport::Transport;

const PERIOD: usize = 64;
const TICK: f64 = 1_000.0; // frames per tick at 120 BPM, 48 kHz

fn follower(c: &mut Criterion) {
    let mut follower = ClockFollower::new(48_000);
    follower.feed(0, ClockMessage::Start);
    let mut k = 0u64;
    c.bench_function("clock/follower one tick", |b| {
        b.iter(|| {
            k += 1;
            let jitter = (k * 7919 % 101) as f64 - 50.0;
            let at = (k as f64 * TICK + jitter) as u64;
            black_box(follower.feed(black_box(at), ClockMessage::Tick));
            black_box(follower.beats_at(at + 10));
        })
    });
}

fn sender(c: &mut Criterion) {
    let mut sender = ClockSender::new();
    let per_frame = 120.0 / (60.0 * 48_000.0);
    let mut beats = 0.0;
    c.bench_function("clock/sender one 64-frame period", |b| {
        b.iter(|| {
            let mut sent = 0;
            sender.period(beats, per_frame, PERIOD, true, |_, _| sent += 1);
            beats += per_frame * PERIOD as f64;
            black_box(sent)
        })
    });
}

fn mixer(source: ClockSource) -> (Processor, djinn_engine::mix::MixerHandle) {
    let mut transport = Transport::default();
    transport.rolling = true;
    let (processor, mut handle) = Processor::new(48_000, PERIOD, transport);
    handle.send(Command::SetClockSource(source)).unwrap();
    for id in 0..16u64 {
        let frames: Vec<[f32; 2]> = (0..48_000)
            .map(|i| [0.01 * ((i * (id + 1)) % 97) as f32 / 97.0; 2])
            .collect();
        handle
            .send(Command::Launch {
                id,
                audio: Box::new(LayerAudio {
                    frames: frames.into(),
                    looped: true,
                }),
                group: Group::ALL[(id % 4) as usize],
                params: LayerParams {
                    reverb_send: 0.3,
                    delay_send: 0.2,
                    ..LayerParams::default()
                },
                at: Quantize::Now,
            })
            .unwrap();
    }
    (processor, handle)
}

fn following(c: &mut Criterion) {
    let mut buffers = OutputBuffers::new(PERIOD);
    let (mut own, mut own_handle) = mixer(ClockSource::Internal);
    let mut frame = 0u64;
    c.bench_function("clock/mixer 64 frames, own clock", |b| {
        b.iter(|| {
            let mut out = buffers.outputs();
            own.process_at(frame, black_box(&mut out));
            frame += PERIOD as u64;
            while own_handle.poll().is_some() {}
        })
    });
    let (mut follow, mut follow_handle) = mixer(ClockSource::Midi);
    follow.clock_input(0, &[0xFA]);
    let mut frame = 0u64;
    let mut next_tick = 10.0;
    c.bench_function("clock/mixer 64 frames following MIDI clock", |b| {
        b.iter(|| {
            // Every period carries a tick, so every period is split.
            let offset = (next_tick - frame as f64).clamp(0.0, (PERIOD - 1) as f64) as u32;
            follow.clock_input(offset, &[0xF8]);
            next_tick += PERIOD as f64;
            let mut out = buffers.outputs();
            follow.process_at(frame, black_box(&mut out));
            frame += PERIOD as u64;
            while follow_handle.poll().is_some() {}
        })
    });
}

criterion_group!(benches, follower, sender, following);
criterion_main!(benches);
