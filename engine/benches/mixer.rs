//! `Processor::process` for one 64-frame period at 48 kHz with 16 playing layers, each
//! filtered and sending to reverb and delay, plus the master chain. The period's time
//! budget is 1,333 µs; the target is under 10 % of it.

use std::f32::consts::PI;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use djinn_engine::dsp::{FilterMode, Reverb};
use djinn_engine::mix::{
    Command, FilterSettings, Group, LayerAudio, LayerParams, OutputBuffers, Processor, Quantize,
};
use djinn_engine::transport::Transport;

const PERIOD: usize = 64;

fn sixteen_layers(c: &mut Criterion) {
    let mut transport = Transport::default();
    transport.rolling = true;
    let (mut processor, mut handle) = Processor::new(48_000, PERIOD, transport);
    for id in 0..16u64 {
        let freq = 55.0 * (1.0 + id as f32);
        let frames = (0..96_000)
            .map(|i| {
                let v = 0.05 * (2.0 * PI * freq * i as f32 / 48_000.0).sin();
                [v, v * 0.9]
            })
            .collect::<Vec<_>>()
            .into();
        let modes = [
            FilterMode::LowPass,
            FilterMode::HighPass,
            FilterMode::BandPass,
        ];
        handle
            .send(Command::Launch {
                id,
                audio: Box::new(LayerAudio {
                    frames,
                    looped: true,
                }),
                group: Group::ALL[(id % 4) as usize],
                params: LayerParams {
                    pan: (id as f32 / 8.0) - 1.0,
                    filter: FilterSettings {
                        mode: modes[(id % 3) as usize],
                        cutoff_hz: 400.0 + 300.0 * id as f32,
                        resonance: 0.3,
                    },
                    reverb_send: 0.3,
                    delay_send: 0.2,
                    ..LayerParams::default()
                },
                at: Quantize::Now,
            })
            .unwrap();
    }
    let mut buffers = OutputBuffers::new(PERIOD);
    c.bench_function(
        "mix/process 64 frames, 16 layers, filter+sends+master",
        |b| {
            b.iter(|| {
                let mut outputs = buffers.outputs();
                processor.process(black_box(&mut outputs));
                while handle.poll().is_some() {}
            })
        },
    );
}

/// The Freeverb-style reverb over one second of noise at 48 kHz: frame by frame (as the
/// mixer runs it) and a block at a time (as the generator renders each part's reverb).
fn reverb(c: &mut Criterion) {
    let mut state = 5u32;
    let input: Vec<[f32; 2]> = (0..48_000)
        .map(|_| {
            let mut next = || {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            };
            [next(), next()]
        })
        .collect();
    let mut wet = vec![[0.0f32; 2]; input.len()];
    let mut reverb = Reverb::new(48_000.0);
    reverb.set(0.7, 0.45);
    c.bench_function("dsp/reverb 1 s, frame by frame", |b| {
        b.iter(|| {
            for (w, f) in wet.iter_mut().zip(&input) {
                *w = reverb.process(*f);
            }
            black_box(&wet);
        })
    });
    c.bench_function("dsp/reverb 1 s, process_block", |b| {
        b.iter(|| {
            reverb.process_block(black_box(&input), &mut wet);
            black_box(&wet);
        })
    });
}

criterion_group!(benches, sixteen_layers, reverb);
criterion_main!(benches);
