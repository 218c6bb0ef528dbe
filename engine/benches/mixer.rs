//! `Processor::process` for one 64-frame period at 48 kHz with 16 playing layers, each
//! filtered and sending to reverb and delay, plus the master chain. The period's time
//! budget is 1,333 µs; the target is under 10 % of it.

use std::f32::consts::PI;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use djinn_engine::dsp::{FilterMode, LimiterGain, Reverb};
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
    // A JACK client sleeps between periods while other programs run: its callback starts
    // with little of its state in the core's caches. Writing 8 MiB between calls (twice
    // the core's L2) leaves it so.
    let mut elsewhere = vec![0u8; 8 << 20];
    c.bench_function(
        "mix/process 64 frames, 16 layers, filter+sends+master, caches cold",
        |b| {
            b.iter_batched(
                || {
                    elsewhere.iter_mut().for_each(|x| *x = x.wrapping_add(1));
                    black_box(&elsewhere);
                },
                |()| {
                    let mut outputs = buffers.outputs();
                    processor.process(black_box(&mut outputs));
                    while handle.poll().is_some() {}
                },
                BatchSize::PerIteration,
            )
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

/// The limiter's gain law over ten seconds of needs at 48 kHz shaped like a loud master's:
/// a dip of a few milliseconds on every beat at 124 BPM and short ones between, in plain
/// need of no reduction elsewhere. Step by step (as the mixer's limiter runs it) and over a
/// block (as the master runs it offline).
fn limiter_law(c: &mut Criterion) {
    let beat = (48_000.0 * 60.0 / 124.0) as usize;
    let needs: Vec<f32> = (0..480_000)
        .map(|i| match i % beat {
            at if at < 200 => 0.5 + 0.002 * at as f32,
            at if (beat / 2..beat / 2 + 60).contains(&at) => 0.9,
            _ => 1.0,
        })
        .collect();
    let mut gains = vec![0.0f32; needs.len()];
    c.bench_function("dsp/limiter law 10 s, step by step", |b| {
        b.iter(|| {
            let mut law = LimiterGain::for_rate(48_000.0);
            for (g, &n) in gains.iter_mut().zip(&needs) {
                *g = law.next(n);
            }
            black_box(&gains);
        })
    });
    c.bench_function("dsp/limiter law 10 s, run over blocks of 1024", |b| {
        b.iter(|| {
            let mut law = LimiterGain::for_rate(48_000.0);
            for (g, n) in gains.chunks_mut(1024).zip(needs.chunks(1024)) {
                law.run(n, g);
            }
            black_box(&gains);
        })
    });
    // Pushed hard, as a master made 6 dB louder than its peaks allow is: a bass line's
    // cycles and a kick on every beat ask for some reduction most of the time, a different
    // amount every sample.
    let pushed: Vec<f32> = (0..480_000)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let kick = (-((i % beat) as f32) / 2_400.0).exp();
            let peak = 0.6 + 0.5 * (std::f32::consts::TAU * 55.0 * t).sin().abs() + 0.4 * kick;
            (0.8 / peak).min(1.0)
        })
        .collect();
    c.bench_function("dsp/limiter law 10 s pushed hard, step by step", |b| {
        b.iter(|| {
            let mut law = LimiterGain::for_rate(48_000.0);
            for (g, &n) in gains.iter_mut().zip(&pushed) {
                *g = law.next(n);
            }
            black_box(&gains);
        })
    });
    c.bench_function(
        "dsp/limiter law 10 s pushed hard, run over blocks of 1024",
        |b| {
            b.iter(|| {
                let mut law = LimiterGain::for_rate(48_000.0);
                for (g, n) in gains.chunks_mut(1024).zip(pushed.chunks(1024)) {
                    law.run(n, g);
                }
                black_box(&gains);
            })
        },
    );
}

criterion_group!(benches, sixteen_layers, reverb, limiter_law);
criterion_main!(benches);
