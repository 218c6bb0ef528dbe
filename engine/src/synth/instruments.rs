//! The pitched instruments (pads, basses, leads) and the effects sounds, one note at a
//! time.
//!
//! A note is rendered once per distinct (pitch, length, slide, accent) and reused wherever
//! it recurs, scaled by velocity: a song repeats its notes many times, and this is what
//! makes rendering a three-minute song take a fraction of a second.

use std::collections::HashMap;
use std::f32::consts::TAU;

use super::Instrument;
use super::pattern::Note;
use super::voice::{
    Adsr, Noise, Pulse, Saw, Sine, VoiceFilter, centre, fast_sin, pan_gains, saturate,
};
use crate::music::note_hz;

/// How often a voice retunes its filter, in samples.
const TUNE_EVERY: usize = 32;

/// How an instrument is voiced beyond its notes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tone {
    /// Dark (0) to bright (1): filter cutoffs and partials.
    pub brightness: f32,
    /// An envelope that replaces the instrument's own.
    pub shape: Option<Adsr>,
}

impl Tone {
    pub fn brightness(brightness: f32) -> Tone {
        Tone {
            brightness,
            shape: None,
        }
    }
}

/// What distinguishes one rendered note from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct NoteKey {
    pitch: u32,
    held: usize,
    slide: Option<u32>,
    accent: bool,
}

/// Every note rendered so far in a piece, by instrument and note, so that each distinct
/// note is synthesized once however often it recurs.
pub(crate) struct Voices {
    seed: u64,
    tone: Tone,
    sample_rate: u32,
    sounds: HashMap<(Instrument, NoteKey), Vec<[f32; 2]>>,
}

impl Voices {
    pub fn new(seed: u64, tone: Tone, sample_rate: u32) -> Voices {
        Voices {
            seed,
            tone,
            sample_rate,
            sounds: HashMap::new(),
        }
    }

    /// Renders `notes` played by `instrument` into `out`, frame 0 being beat 0 of the
    /// score. Notes past the end of `out` are cut; `out` should leave room for tails.
    pub fn render(
        &mut self,
        instrument: Instrument,
        notes: &[Note],
        frames_per_beat: f64,
        out: &mut [[f32; 2]],
    ) {
        let sr = self.sample_rate as f32;
        for note in notes {
            let start = (note.beat * frames_per_beat).round().max(0.0) as usize;
            if start >= out.len() {
                continue;
            }
            let held = ((note.length * frames_per_beat).round() as usize).max(16);
            let key = NoteKey {
                pitch: note.pitch.to_bits(),
                held,
                slide: note.slide_from.map(f32::to_bits),
                accent: note.velocity > 0.9,
            };
            let (seed, tone) = (self.seed, self.tone);
            let sound = self.sounds.entry((instrument, key)).or_insert_with(|| {
                let voice_seed = seed
                    ^ u64::from(key.pitch).rotate_left(17)
                    ^ (held as u64).rotate_left(40)
                    ^ instrument as u64;
                let mut sound = voice(
                    instrument,
                    note.pitch,
                    held,
                    note.slide_from,
                    key.accent,
                    tone,
                    sr,
                    voice_seed,
                );
                centre(&mut sound);
                sound
            });
            let gains = pan_gains(note.pan);
            // Re-centre the equal-power law so a centred note keeps unity gain.
            let v = note.velocity * std::f32::consts::SQRT_2;
            let gains = [gains[0] * v, gains[1] * v];
            if let Some(dest) = out.get_mut(start..) {
                for (frame, s) in dest.iter_mut().zip(sound.iter()) {
                    frame[0] += s[0] * gains[0];
                    frame[1] += s[1] * gains[1];
                }
            }
        }
    }
}

/// One note of `instrument`, at unit velocity.
#[allow(clippy::too_many_arguments)]
fn voice(
    instrument: Instrument,
    pitch: f32,
    held: usize,
    slide_from: Option<f32>,
    accent: bool,
    tone: Tone,
    sr: f32,
    seed: u64,
) -> Vec<[f32; 2]> {
    use Instrument::*;
    let Tone { brightness, shape } = tone;
    match instrument {
        Supersaw | WarmPad | Strings | Choir => saw_pad(instrument, pitch, held, tone, sr, seed),
        BellPad => fm(
            pitch,
            held,
            2.0,
            1.2,
            1.5,
            shape.unwrap_or(Adsr::new(0.5, 2.0, 0.6, 1.6)),
            sr,
            true,
        ),
        Sub | Acid | Reese | Bass808 => mono(bass(
            instrument, pitch, held, slide_from, accent, tone, sr, seed,
        )),
        MonoLead | Pluck | Arp => mono(lead(instrument, pitch, held, tone, sr, seed)),
        Piano => mono(piano(pitch, held, tone, sr, seed)),
        Bell => fm(
            pitch,
            held,
            3.5,
            2.5,
            0.35,
            shape.unwrap_or(Adsr::new(0.002, 1.4, 0.0, 0.6)),
            sr,
            false,
        ),
        Riser | Downlifter | Impact | NoiseSweep => {
            mono(fx(instrument, pitch, held, brightness, sr, seed))
        }
        // Kits are rendered by the drum machine, never as notes.
        Kit | Kit808 | BreaksKit | SoftKit => Vec::new(),
    }
}

fn mono(samples: Vec<f32>) -> Vec<[f32; 2]> {
    samples.into_iter().map(|s| [s, s]).collect()
}

/// A deterministic start phase in [0, 1) for oscillator `i` of a voice.
fn phase(seed: u64, i: u64) -> f32 {
    let mut noise = Noise::new(seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    noise.sample() * 0.5 + 0.5
}

/// Detuned saw stacks through a moving low-pass: supersaw, warm pad, strings and choir.
fn saw_pad(
    kind: Instrument,
    pitch: f32,
    held: usize,
    tone: Tone,
    sr: f32,
    seed: u64,
) -> Vec<[f32; 2]> {
    let brightness = tone.brightness;
    let (adsr, count, spread_cents, base_cutoff, vibrato) = match kind {
        Instrument::Supersaw => (
            Adsr::new(0.2, 0.8, 0.85, 0.9),
            7,
            24.0,
            1800.0 + 5000.0 * brightness,
            0.0,
        ),
        Instrument::Strings => (
            Adsr::new(0.35, 0.6, 0.9, 0.7),
            4,
            10.0,
            1400.0 + 3000.0 * brightness,
            0.08,
        ),
        Instrument::Choir => (Adsr::new(0.5, 0.8, 0.9, 1.0), 3, 8.0, 2500.0, 0.05),
        _ => (
            Adsr::new(0.6, 1.2, 0.8, 1.3),
            3,
            9.0,
            700.0 + 1800.0 * brightness,
            0.0,
        ),
    };
    let len = adsr.length(held, sr);
    let mut env = adsr.start(held, sr);
    let hz = note_hz(pitch);
    let mut oscs: Vec<(Saw, f32, usize)> = (0..count)
        .map(|i| {
            let spread = if count == 1 {
                0.0
            } else {
                i as f32 / (count - 1) as f32 * 2.0 - 1.0
            };
            let dt = hz * (spread * spread_cents / 1200.0).exp2() / sr;
            // Alternate sides; the middle oscillator of an odd stack sits in the centre.
            let side = if count % 2 == 1 && i == count / 2 {
                2
            } else {
                i % 2
            };
            (
                Saw {
                    phase: phase(seed, i as u64),
                },
                dt,
                side,
            )
        })
        .collect();
    let mut filters = [VoiceFilter::default(); 2];
    let mut formants = [
        VoiceFilter::new(750.0, 0.7, sr),
        VoiceFilter::new(750.0, 0.7, sr),
        VoiceFilter::new(1150.0, 0.75, sr),
        VoiceFilter::new(1150.0, 0.75, sr),
    ];
    let lfo_rate = 0.11 + 0.07 * phase(seed, 99);
    let mut vib = Sine {
        phase: phase(seed, 77),
    };
    let gain = 1.0 / (count as f32).sqrt();
    let mut out = Vec::with_capacity(len);
    for n in 0..len {
        if n % TUNE_EVERY == 0 {
            let t = n as f32 / sr;
            let movement = 1.0 + 0.35 * fast_sin((t * lfo_rate).fract() * TAU);
            let opening = 0.55 + 0.45 * (t / 1.5).min(1.0);
            for f in &mut filters {
                f.tune(base_cutoff * movement * opening, 0.15, sr);
            }
        }
        let wobble = if vibrato > 0.0 {
            1.0 + vibrato / 12.0 * 0.69 * vib.next(5.0 / sr)
        } else {
            1.0
        };
        let mut lr = [0.0f32; 3];
        for (osc, dt, side) in &mut oscs {
            if let Some(slot) = lr.get_mut(*side) {
                *slot += osc.next(*dt * wobble);
            }
        }
        let lr = [
            lr[0] + lr[2] * std::f32::consts::FRAC_1_SQRT_2,
            lr[1] + lr[2] * std::f32::consts::FRAC_1_SQRT_2,
        ];
        let e = env.advance() * gain;
        let mut frame = [0.0f32; 2];
        for ch in 0..2 {
            let x = filters[ch].low(lr[ch]);
            frame[ch] = if kind == Instrument::Choir {
                let (a, b) = formants.split_at_mut(2);
                0.6 * a[ch].band(x) + 0.4 * b[ch].band(x) + 0.15 * x
            } else {
                x
            } * e;
        }
        out.push(frame);
    }
    out
}

/// Two-operator FM: bells and bell pads. `ratio` is modulator/carrier, `index` the
/// modulation depth at the strike, decaying over `index_decay` seconds.
#[allow(clippy::too_many_arguments)]
fn fm(
    pitch: f32,
    held: usize,
    ratio: f32,
    index: f32,
    index_decay: f32,
    adsr: Adsr,
    sr: f32,
    stereo: bool,
) -> Vec<[f32; 2]> {
    let len = adsr.length(held, sr);
    let mut env = adsr.start(held, sr);
    let hz = note_hz(pitch);
    let detune = if stereo { 1.003 } else { 1.0 };
    let mut carriers = [Sine::default(), Sine { phase: 0.25 }];
    let mut modulator = Sine::default();
    let index_coeff = (-1.0 / (index_decay * sr)).exp();
    let mut depth = index;
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let m = modulator.next(hz * ratio / sr) * (depth + 0.15);
        depth *= index_coeff;
        let e = env.advance();
        let l = carriers[0].next(hz * (1.0 + m * 0.5 / ratio.max(1.0)) / sr);
        let r = carriers[1].next(hz * detune * (1.0 + m * 0.5 / ratio.max(1.0)) / sr);
        out.push([l * e * 0.7, r * e * 0.7]);
    }
    out
}

/// The pitch of a gliding note `n` frames in: from `slide_from` to `pitch` over `glide`
/// frames.
#[inline]
fn glide(pitch: f32, slide_from: Option<f32>, n: usize, glide: f32) -> f32 {
    match slide_from {
        Some(from) if (n as f32) < glide => {
            let x = n as f32 / glide;
            from + (pitch - from) * (x * (2.0 - x))
        }
        _ => pitch,
    }
}

#[allow(clippy::too_many_arguments)]
fn bass(
    kind: Instrument,
    pitch: f32,
    held: usize,
    slide_from: Option<f32>,
    accent: bool,
    tone: Tone,
    sr: f32,
    seed: u64,
) -> Vec<f32> {
    let brightness = tone.brightness;
    let adsr = match kind {
        Instrument::Sub => Adsr::new(0.004, 0.3, 0.85, 0.06),
        Instrument::Acid => Adsr::new(0.003, 0.25, 0.6, 0.04),
        Instrument::Reese => Adsr::new(0.01, 0.5, 0.9, 0.12),
        _ => Adsr::new(0.002, 1.6, 0.35, 0.12),
    };
    let adsr = tone.shape.unwrap_or(adsr);
    let len = adsr.length(held, sr);
    let mut env = adsr.start(held, sr);
    let glide_frames = 0.07 * sr;
    let mut sine = Sine::default();
    let mut second = Sine::default();
    let mut saws = [
        Saw {
            phase: phase(seed, 1),
        },
        Saw {
            phase: phase(seed, 2),
        },
    ];
    let mut filter = VoiceFilter::default();
    let mut out = Vec::with_capacity(len);
    for n in 0..len {
        let t = n as f32 / sr;
        let p = glide(pitch, slide_from, n, glide_frames);
        let e = env.advance();
        let s = match kind {
            Instrument::Sub => {
                let hz = note_hz(p);
                saturate(1.1 * (sine.next(hz / sr) + 0.2 * second.next(2.0 * hz / sr)))
            }
            Instrument::Acid => {
                if n % TUNE_EVERY == 0 {
                    let amount = if accent { 9.0 } else { 5.0 };
                    let base = 180.0 + 700.0 * brightness;
                    filter.tune(base * (1.0 + amount * (-t / 0.12).exp()), 0.82, sr);
                }
                let x = saws[0].next(note_hz(p) / sr);
                saturate(filter.low(x) * if accent { 2.2 } else { 1.6 }) * 0.8
            }
            Instrument::Reese => {
                if n % TUNE_EVERY == 0 {
                    filter.tune(350.0 + 900.0 * brightness, 0.2, sr);
                }
                let hz = note_hz(p);
                let x = 0.5 * saws[0].next(hz * 1.007 / sr) + 0.5 * saws[1].next(hz * 0.993 / sr);
                saturate(1.4 * filter.low(x) + 0.6 * sine.next(hz / sr)) * 0.8
            }
            _ => {
                // 808: a short upward blip in pitch at the strike, then the tone.
                let drop = if slide_from.is_none() {
                    5.0 * (-t / 0.035).exp()
                } else {
                    0.0
                };
                let hz = note_hz(p + drop);
                saturate(1.8 * sine.next(hz / sr)) * 0.85
            }
        };
        out.push(s * e);
    }
    out
}

fn lead(kind: Instrument, pitch: f32, held: usize, tone: Tone, sr: f32, seed: u64) -> Vec<f32> {
    let brightness = tone.brightness;
    let adsr = match kind {
        Instrument::MonoLead => Adsr::new(0.01, 0.3, 0.75, 0.2),
        Instrument::Pluck => Adsr::new(0.002, 0.35, 0.0, 0.15),
        _ => Adsr::new(0.002, 0.16, 0.0, 0.08),
    };
    let adsr = tone.shape.unwrap_or(adsr);
    let len = adsr.length(held, sr);
    let mut env = adsr.start(held, sr);
    let hz = note_hz(pitch);
    let mut saw = Saw {
        phase: phase(seed, 3),
    };
    let mut pulse = Pulse {
        phase: phase(seed, 4),
        width: if kind == Instrument::Arp { 0.25 } else { 0.5 },
    };
    let mut vibrato = Sine::default();
    let mut filter = VoiceFilter::default();
    let mut out = Vec::with_capacity(len);
    for n in 0..len {
        let t = n as f32 / sr;
        if n % TUNE_EVERY == 0 {
            let cutoff = match kind {
                Instrument::MonoLead => {
                    (1000.0 + 4500.0 * brightness) * (0.6 + 0.8 * (-t / 0.3).exp())
                }
                Instrument::Pluck => 300.0 + (1800.0 + 6000.0 * brightness) * (-t / 0.09).exp(),
                _ => 500.0 + (2500.0 + 5000.0 * brightness) * (-t / 0.05).exp(),
            };
            filter.tune(cutoff, 0.25, sr);
        }
        let wobble = if kind == Instrument::MonoLead && t > 0.25 {
            1.0 + 0.008 * vibrato.next(5.5 / sr)
        } else {
            1.0
        };
        let dt = hz * wobble / sr;
        let x = 0.6 * saw.next(dt) + 0.4 * pulse.next(dt * 1.004);
        out.push(filter.low(x) * env.advance());
    }
    out
}

/// An additive piano: inharmonic partials that die faster the higher they are, and a
/// felt thump at the strike.
fn piano(pitch: f32, held: usize, tone: Tone, sr: f32, seed: u64) -> Vec<f32> {
    const PARTIALS: usize = 8;
    let brightness = tone.brightness;
    let adsr = tone.shape.unwrap_or(Adsr::new(0.002, 10.0, 1.0, 0.25));
    let len = adsr.length(held.min((3.0 * sr) as usize), sr);
    let mut env = adsr.start(held.min((3.0 * sr) as usize), sr);
    let hz = note_hz(pitch);
    let inharmonicity = 0.0004;
    let mut partials: Vec<(Sine, f32, f32, f32)> = (1..=PARTIALS)
        .filter_map(|k| {
            let k = k as f32;
            let f = hz * k * (1.0 + inharmonicity * k * k).sqrt();
            (f < sr * 0.45).then(|| {
                let amp = (0.6 + 0.6 * brightness) / k.powf(1.3 - 0.4 * brightness);
                let decay = (-1.0 / ((2.8 / (1.0 + 0.5 * k)) * sr)).exp();
                (Sine::default(), f / sr, amp, decay)
            })
        })
        .collect();
    let mut gains: Vec<f32> = partials.iter().map(|p| p.2).collect();
    let mut noise = Noise::new(seed);
    let mut thump = VoiceFilter::new(900.0, 0.1, sr);
    let mut out = Vec::with_capacity(len);
    for n in 0..len {
        let mut x = 0.0;
        for (p, g) in partials.iter_mut().zip(gains.iter_mut()) {
            x += p.0.next(p.1) * *g;
            *g *= p.3;
        }
        let strike = thump.low(noise.sample()) * (-(n as f32) / (0.012 * sr)).exp() * 0.5;
        out.push((x * 0.45 + strike) * env.advance());
    }
    out
}

fn fx(kind: Instrument, pitch: f32, held: usize, brightness: f32, sr: f32, seed: u64) -> Vec<f32> {
    let len = match kind {
        Instrument::Impact => (2.0 * sr) as usize,
        _ => held,
    };
    let mut noise = Noise::new(seed);
    let mut filter = VoiceFilter::default();
    let mut saw = Saw { phase: 0.0 };
    let mut sine = Sine::default();
    let mut out = Vec::with_capacity(len);
    let top = 4000.0 + 6000.0 * brightness;
    for n in 0..len {
        let x = n as f32 / len.max(1) as f32;
        let t = n as f32 / sr;
        let s = match kind {
            Instrument::Riser => {
                if n % TUNE_EVERY == 0 {
                    filter.tune(200.0 * (top / 200.0).powf(x), 0.5, sr);
                }
                let tone = saw.next(note_hz(pitch + 12.0 * x) / sr) * 0.25;
                (filter.band(noise.sample()) * 1.5 + tone) * x * x
            }
            Instrument::Downlifter => {
                if n % TUNE_EVERY == 0 {
                    filter.tune(top * (150.0 / top).powf(x), 0.5, sr);
                }
                let tone = saw.next(note_hz(pitch + 12.0 - 24.0 * x) / sr) * 0.2;
                (filter.band(noise.sample()) * 1.5 + tone) * (1.0 - x) * (1.0 - x)
            }
            Instrument::Impact => {
                let hz = note_hz(pitch - 24.0) * (1.0 + (-t / 0.08).exp());
                if n % TUNE_EVERY == 0 {
                    filter.tune(2500.0 * (-t / 0.2).exp() + 100.0, 0.1, sr);
                }
                let attack = (t / 0.002).min(1.0);
                attack
                    * (sine.next(hz / sr) * (-t / 0.7).exp()
                        + filter.low(noise.sample()) * (-t / 0.25).exp() * 0.8)
            }
            _ => {
                let sweep = fast_sin(x * std::f32::consts::PI);
                if n % TUNE_EVERY == 0 {
                    filter.tune(300.0 * (top / 300.0).powf(sweep), 0.4, sr);
                }
                filter.low(noise.sample()) * sweep * 0.9
            }
        };
        out.push(s);
    }
    out
}
