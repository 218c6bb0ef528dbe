//! Golden buffers for every effect: each runs on a fixed input and its output is compared
//! with a reference WAV in `tests/golden/`. On a mismatch the output is written beside the
//! reference as `<name>.actual.wav` to listen to and diff. After an intended change, bless
//! new references with `DJINN_BLESS=1 cargo test -p djinn-engine --test golden`.

use std::f32::consts::PI;
use std::path::PathBuf;

use djinn_engine::dsp::{Biquad, Compressor, Delay, FilterMode, Limiter, Reverb, Svf};

const SR: f32 = 48_000.0;
const FRAMES: usize = 4096;
/// Allowed difference per sample: room for libm differences between machines, far below
/// anything audible or any change in behaviour.
const TOLERANCE: f32 = 1e-4;

/// A test signal with content across the spectrum: a 110 Hz tone, a 5 kHz tone and a burst
/// of deterministic noise, left and right a little apart.
fn input() -> Vec<[f32; 2]> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..FRAMES)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = if (512..1024).contains(&i) {
                (state as f32 / u64::MAX as f32 - 0.5) * 0.8
            } else {
                0.0
            };
            let t = i as f32 / SR;
            let l =
                0.4 * (2.0 * PI * 110.0 * t).sin() + 0.2 * (2.0 * PI * 5000.0 * t).sin() + noise;
            let r = 0.4 * (2.0 * PI * 110.0 * t + 0.3).sin() + 0.2 * (2.0 * PI * 5000.0 * t).sin()
                - noise;
            [l, r]
        })
        .collect()
}

fn golden(name: &str, output: &[[f32; 2]]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let reference = dir.join(format!("{name}.wav"));
    let actual = dir.join(format!("{name}.actual.wav"));
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SR as u32,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let write = |path: &PathBuf| {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for [l, r] in output {
            w.write_sample(*l).unwrap();
            w.write_sample(*r).unwrap();
        }
        w.finalize().unwrap();
    };
    if std::env::var_os("DJINN_BLESS").is_some() {
        write(&reference);
        return;
    }
    let expected: Vec<f32> = match hound::WavReader::open(&reference) {
        Ok(mut reader) => reader.samples::<f32>().map(Result::unwrap).collect(),
        Err(e) => {
            write(&actual);
            panic!("{name}: no reference ({e}); wrote {}", actual.display());
        }
    };
    let got: Vec<f32> = output.iter().flatten().copied().collect();
    let worst = expected
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if expected.len() != got.len() || worst > TOLERANCE {
        write(&actual);
        panic!(
            "{name}: output differs from the reference by up to {worst} ({} vs {} samples); \
             wrote {}",
            got.len(),
            expected.len(),
            actual.display()
        );
    }
    let _ = std::fs::remove_file(&actual);
}

fn run(mut effect: impl FnMut([f32; 2]) -> [f32; 2]) -> Vec<[f32; 2]> {
    input().into_iter().map(&mut effect).collect()
}

#[test]
fn state_variable_filters() {
    for (name, mode) in [
        ("svf_lowpass", FilterMode::LowPass),
        ("svf_highpass", FilterMode::HighPass),
        ("svf_bandpass", FilterMode::BandPass),
    ] {
        let mut svf = Svf::new(SR);
        svf.set(mode, 800.0, 0.5);
        golden(name, &run(|x| svf.process(x)));
    }
}

#[test]
fn shelving_eq() {
    let mut low = Biquad::shelf(false, 120.0, 6.0, SR);
    golden("shelf_low_plus6", &run(|x| low.process(x)));
    let mut high = Biquad::shelf(true, 8000.0, -6.0, SR);
    golden("shelf_high_minus6", &run(|x| high.process(x)));
}

#[test]
fn tempo_delay() {
    let mut delay = Delay::new(1.0, SR);
    delay.set_time(1000.0);
    delay.feedback = 0.5;
    golden("delay_1000_frames", &run(|x| delay.process(x)));
}

#[test]
fn reverb() {
    let mut reverb = Reverb::new(SR);
    reverb.set(0.7, 0.4);
    golden("reverb", &run(|x| reverb.process(x)));
}

#[test]
fn compressor() {
    let mut comp = Compressor::new(SR);
    comp.threshold_db = -18.0;
    comp.ratio = 4.0;
    comp.makeup_db = 3.0;
    comp.set_times(2.0, 60.0);
    golden("compressor", &run(|x| comp.process(x)));
}

#[test]
fn limiter() {
    let mut limiter = Limiter::new(-6.0, SR);
    golden(
        "limiter_minus6",
        &run(|x| limiter.process([x[0] * 2.0, x[1] * 2.0])),
    );
}
