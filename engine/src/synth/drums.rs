//! The drum machine: every drum synthesized (sine sweeps, filtered noise, bursts), no
//! samples. Each drum of a kit is rendered once and mixed at each hit's velocity.

use std::collections::HashMap;

use super::Instrument;
use super::pattern::{Drum, Hit};
use super::voice::{Noise, Sine, VoiceFilter, centre, pan_gains, saturate};

/// Frames over which every hit fades in, so that none starts with a step.
const ATTACK_FRAMES: f32 = 24.0;

/// The drums of every kit used in a piece, each synthesized once.
pub(crate) struct DrumMachine {
    seed: u64,
    sample_rate: u32,
    kick_hz: f32,
    sounds: HashMap<(Instrument, Drum), Vec<f32>>,
}

impl DrumMachine {
    /// A machine whose kick is tuned to `kick_hz`.
    pub fn new(seed: u64, kick_hz: f32, sample_rate: u32) -> DrumMachine {
        DrumMachine {
            seed,
            sample_rate,
            kick_hz,
            sounds: HashMap::new(),
        }
    }

    /// Renders `hits` on `kit` into `out`, frame 0 being beat 0.
    pub fn render(
        &mut self,
        kit: Instrument,
        hits: &[Hit],
        frames_per_beat: f64,
        out: &mut [[f32; 2]],
    ) {
        let sr = self.sample_rate as f32;
        for hit in hits {
            let start = (hit.beat * frames_per_beat).round().max(0.0) as usize;
            let (seed, kick_hz) = (self.seed, self.kick_hz);
            let sound = self
                .sounds
                .entry((kit, hit.drum))
                .or_insert_with(|| drum(hit.drum, kit, kick_hz, sr, seed ^ hit.drum as u64));
            let [l, r] = pan_gains(hit.drum.pan());
            let gains = [
                l * std::f32::consts::SQRT_2 * hit.velocity,
                r * std::f32::consts::SQRT_2 * hit.velocity,
            ];
            if let Some(dest) = out.get_mut(start..) {
                for (frame, &s) in dest.iter_mut().zip(sound.iter()) {
                    frame[0] += s * gains[0];
                    frame[1] += s * gains[1];
                }
            }
        }
    }
}

/// One drum of one kit at full velocity.
fn drum(drum: Drum, kit: Instrument, kick_hz: f32, sr: f32, seed: u64) -> Vec<f32> {
    let soft = kit == Instrument::SoftKit;
    let boomy = kit == Instrument::Kit808;
    let snappy = kit == Instrument::BreaksKit;
    let seconds = match drum {
        Drum::Kick if boomy => 0.9,
        Drum::Kick => 0.45,
        Drum::OpenHat => 0.45,
        Drum::Crash => 1.6,
        Drum::TomLow | Drum::TomHigh => 0.5,
        _ => 0.3,
    };
    let len = (seconds * sr) as usize;
    let mut noise = Noise::new(seed);
    let mut tone = Sine::default();
    let mut filter = VoiceFilter::default();
    // Real cymbals and snare wires fade out above 12–14 kHz; unfiltered noise up to Nyquist
    // would only add inter-sample peaks.
    let mut air = VoiceFilter::new(if soft { 8000.0 } else { 13_000.0 }, 0.0, sr);
    match drum {
        Drum::Snare | Drum::Clap => {
            let centre = if snappy { 2400.0 } else { 1500.0 };
            filter.tune(centre, 0.35, sr);
        }
        Drum::ClosedHat | Drum::OpenHat | Drum::Shaker | Drum::Crash => {
            let cutoff = if soft { 4500.0 } else { 7500.0 };
            filter.tune(cutoff, 0.2, sr);
        }
        Drum::Rim => filter.tune(3000.0, 0.4, sr),
        _ => filter.tune(2500.0, 0.1, sr),
    }
    let mut out = Vec::with_capacity(len);
    for n in 0..len {
        let t = n as f32 / sr;
        let attack = (n as f32 / ATTACK_FRAMES).min(1.0);
        let hiss = air.low(noise.sample());
        let s = match drum {
            Drum::Kick => {
                let (start, tau, decay) = if boomy {
                    (110.0, 0.04, 0.45)
                } else if soft {
                    (90.0, 0.05, 0.18)
                } else {
                    (170.0, 0.03, 0.16)
                };
                let hz = kick_hz + (start - kick_hz) * (-t / tau).exp();
                let click = filter.low(hiss) * (-t / 0.003).exp() * 0.4;
                let x = tone.next(hz / sr) * (-t / decay).exp() + click;
                saturate(x * if boomy { 1.6 } else { 1.3 }) * 0.95
            }
            Drum::Snare => {
                let hz = 185.0 * (1.0 + 0.4 * (-t / 0.01).exp());
                let body_part =
                    tone.next(hz / sr) * (-t / 0.05).exp() * if snappy { 0.35 } else { 0.55 };
                let rattle = filter.band(hiss) * (-t / if snappy { 0.09 } else { 0.12 }).exp();
                (body_part + rattle * 1.3) * 0.8
            }
            Drum::Clap => {
                // Three quick bursts, then the room.
                let burst = [0.0, 0.011, 0.022]
                    .iter()
                    .map(|&at| {
                        let dt = t - at;
                        if dt >= 0.0 { (-dt / 0.004).exp() } else { 0.0 }
                    })
                    .fold(0.0f32, f32::max);
                let tail = (-t / 0.11).exp() * 0.6;
                filter.band(hiss) * (burst + tail) * 1.6
            }
            Drum::ClosedHat => filter.high(hiss) * (-t / 0.035).exp() * 0.6,
            Drum::OpenHat => filter.high(hiss) * (-t / 0.16).exp() * 0.5,
            Drum::Crash => filter.high(hiss) * (-t / 0.6).exp() * 0.45,
            Drum::Shaker => {
                let env = (t / 0.012).min(1.0) * (-t / 0.05).exp();
                filter.high(hiss) * env * 0.5
            }
            Drum::TomLow | Drum::TomHigh => {
                let base = if drum == Drum::TomLow { 95.0 } else { 150.0 };
                let hz = base * (1.0 + 0.5 * (-t / 0.04).exp());
                tone.next(hz / sr) * (-t / 0.18).exp() * 0.8
            }
            Drum::Rim => {
                let click = tone.next(1700.0 / sr) * (-t / 0.012).exp();
                (click * 0.6 + filter.band(hiss) * (-t / 0.008).exp()) * 0.7
            }
        };
        out.push(s * attack * if soft { 0.6 } else { 1.0 });
    }
    finish(&mut out);
    out
}

/// Ends a drum sound cleanly and centres it. Its last quarter fades to silence along half a
/// cosine: a kick cut off while it still rings (an 808's tone is at a seventh of its
/// strength after 0.9 s) would click at every hit. Then its mean is taken out
/// ([`centre`]): a kick's first half-cycle outweighs the rest, and a kick on every beat
/// would otherwise push the whole mix off centre by a few thousandths.
fn finish(sound: &mut [f32]) {
    let len = sound.len();
    let fade = len / 4;
    for (i, s) in sound[len - fade..].iter_mut().enumerate() {
        let x = (i + 1) as f32 / fade as f32;
        *s *= 0.5 + 0.5 * (std::f32::consts::PI * x).cos();
    }
    centre(sound.as_chunks_mut::<1>().0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const KITS: [Instrument; 4] = [
        Instrument::Kit,
        Instrument::Kit808,
        Instrument::BreaksKit,
        Instrument::SoftKit,
    ];

    const DRUMS: [Drum; 10] = [
        Drum::Kick,
        Drum::Snare,
        Drum::Clap,
        Drum::ClosedHat,
        Drum::OpenHat,
        Drum::Crash,
        Drum::Shaker,
        Drum::TomLow,
        Drum::TomHigh,
        Drum::Rim,
    ];

    #[test]
    fn every_drum_ends_in_silence_and_carries_no_dc() {
        let sr = 48_000.0;
        for kit in KITS {
            for drum_kind in DRUMS {
                let sound = drum(drum_kind, kit, 50.0, sr, 7);
                let peak = sound.iter().fold(0.0f32, |p, s| p.max(s.abs()));
                assert!(peak > 0.05, "{kit:?} {drum_kind:?} is silent");
                let last = *sound.last().unwrap();
                assert!(
                    last.abs() < 1e-4 * peak,
                    "{kit:?} {drum_kind:?} is cut off at {last} (peak {peak})"
                );
                let mean = sound.iter().map(|&s| f64::from(s)).sum::<f64>() / sound.len() as f64;
                assert!(mean.abs() < 1e-6, "{kit:?} {drum_kind:?} carries DC {mean}");
            }
        }
    }
}
