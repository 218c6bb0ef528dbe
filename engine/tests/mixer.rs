//! The realtime mixer: sample-accurate launches on the grid, clean replaces, levels, pan,
//! groups, and not one allocation in 10,000 periods of busy use.

use std::f32::consts::PI;

use assert_no_alloc::{AllocDisabler, assert_no_alloc};
use djinn_engine::dsp::FilterMode;
use djinn_engine::mix::{
    Command, FilterSettings, GROUPS, Group, LayerAudio, LayerParams, MasterFx, MixerHandle,
    Notification, OutputBuffers, Processor, Quantize, Stage,
};
use djinn_engine::transport::Transport;

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

const SR: u32 = 48_000;

/// A processor at 120 BPM, 4/4, rolling, with effects dry so levels are plain.
fn rolling(period: usize) -> (Processor, MixerHandle) {
    let mut transport = Transport::default();
    transport.tempo = 120.0;
    transport.rolling = true;
    let (processor, mut handle) = Processor::new(SR, period, transport);
    let dry = MasterFx {
        reverb_mix: 0.0,
        delay_mix: 0.0,
        comp_ratio: 1.0,
        limiter_ceiling_db: 0.0,
        ..MasterFx::default()
    };
    handle.send(Command::SetFx(dry)).unwrap();
    (processor, handle)
}

fn sine_loop(freq: f32, frames: usize, amp: f32) -> Box<LayerAudio> {
    Box::new(LayerAudio {
        frames: (0..frames)
            .map(|i| {
                let v = amp * (2.0 * PI * freq * i as f32 / SR as f32).sin();
                [v, v]
            })
            .collect::<Vec<_>>()
            .into(),
        looped: true,
    })
}

fn dc(value: f32, frames: usize, looped: bool) -> Box<LayerAudio> {
    Box::new(LayerAudio {
        frames: vec![[value, value]; frames].into(),
        looped,
    })
}

fn launch(id: u64, audio: Box<LayerAudio>, group: Group, at: Quantize) -> Command {
    Command::Launch {
        id,
        audio,
        group,
        params: LayerParams::default(),
        at,
    }
}

/// Runs `periods` periods, collecting the master and one group channel and notifications.
struct Run {
    master_l: Vec<f32>,
    master_r: Vec<f32>,
    groups: Vec<[Vec<f32>; 2]>,
    notes: Vec<Notification>,
}

fn run(processor: &mut Processor, handle: &mut MixerHandle, period: usize, periods: usize) -> Run {
    let mut buffers = OutputBuffers::new(period);
    let mut result = Run {
        master_l: Vec::new(),
        master_r: Vec::new(),
        groups: vec![[Vec::new(), Vec::new()]; GROUPS],
        notes: Vec::new(),
    };
    for _ in 0..periods {
        processor.process(&mut buffers.outputs());
        result.master_l.extend_from_slice(&buffers.master[0]);
        result.master_r.extend_from_slice(&buffers.master[1]);
        for (dst, src) in result.groups.iter_mut().zip(&buffers.groups) {
            dst[0].extend_from_slice(&src[0]);
            dst[1].extend_from_slice(&src[1]);
        }
        while let Some(note) = handle.poll() {
            result.notes.push(note);
        }
    }
    result
}

#[test]
fn a_bar_quantized_launch_starts_on_the_bar_line_to_the_sample() {
    let period = 256;
    let (mut p, mut h) = rolling(period);
    run(&mut p, &mut h, period, 10); // 2,560 frames into bar 1
    h.send(launch(7, dc(0.5, 1000, true), Group::Drums, Quantize::Bar))
        .unwrap();
    let r = run(&mut p, &mut h, period, 400);
    // 120 BPM at 48 kHz: a 4/4 bar is 96,000 frames; the recording began at frame 2,560.
    let onset = r.groups[0][0].iter().position(|s| *s != 0.0).unwrap() + 2560;
    assert_eq!(onset, 96_000);
    let started = r.notes.iter().find_map(|n| match n {
        Notification::Started { id: 7, frame, .. } => Some(*frame),
        _ => None,
    });
    assert_eq!(started, Some(96_000));
    // Other groups stay silent; the level is the layer's.
    assert!(
        r.groups[1][0]
            .iter()
            .chain(&r.groups[2][0])
            .all(|s| *s == 0.0)
    );
    assert!((r.groups[0][0][96_000 - 2560 + 10] - 0.5).abs() < 1e-6);
}

#[test]
fn beat_and_phrase_quantize_to_their_grid() {
    let period = 64;
    let (mut p, mut h) = rolling(period);
    run(&mut p, &mut h, period, 3); // frame 192
    h.send(launch(1, dc(0.25, 100, true), Group::Bass, Quantize::Beat))
        .unwrap();
    h.send(launch(
        2,
        dc(0.25, 100, true),
        Group::Music,
        Quantize::Phrase(2),
    ))
    .unwrap();
    let r = run(&mut p, &mut h, period, 3100); // past 2 bars = 192,000 frames
    let starts: Vec<(u64, u64)> = r
        .notes
        .iter()
        .filter_map(|n| match n {
            Notification::Started { id, frame, .. } => Some((*id, *frame)),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![(1, 24_000), (2, 192_000)]);
}

#[test]
fn a_launch_at_a_named_bar_lands_on_it_and_a_late_one_is_refused() {
    let period = 256;
    let (mut p, mut h) = rolling(period);
    run(&mut p, &mut h, period, 4); // frame 1,024 of bar 0
    h.send(launch(
        1,
        dc(0.25, 100, true),
        Group::Drums,
        Quantize::AtBar(2),
    ))
    .unwrap();
    // Bar 0 has begun: this one is too late and must not play off the grid.
    h.send(launch(
        2,
        dc(0.25, 100, true),
        Group::Bass,
        Quantize::AtBar(0),
    ))
    .unwrap();
    let r = run(&mut p, &mut h, period, 800); // past 2 bars = 192,000 frames
    let started: Vec<(u64, u64)> = r
        .notes
        .iter()
        .filter_map(|n| match n {
            Notification::Started { id, frame, .. } => Some((*id, *frame)),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![(1, 192_000)]);
    assert!(r.notes.iter().any(|n| matches!(
        n,
        Notification::Refused {
            id: 2,
            reason: djinn_engine::mix::Refusal::Late,
            ..
        }
    )));
    assert!(r.groups[1][0].iter().all(|s| *s == 0.0));
}

#[test]
fn replace_crossfades_without_a_click() {
    let period = 128;
    let (mut p, mut h) = rolling(period);
    // Two loops that do not meet at the swap point: a hard cut would jump by ~0.8.
    h.send(launch(
        1,
        sine_loop(220.0, 48_000, 0.4),
        Group::Music,
        Quantize::Now,
    ))
    .unwrap();
    run(&mut p, &mut h, period, 100);
    let other = Box::new(LayerAudio {
        frames: (0..48_000)
            .map(|i| {
                let v = 0.4 * (2.0 * PI * 330.0 * i as f32 / SR as f32 + 2.0).cos();
                [v, v]
            })
            .collect::<Vec<_>>()
            .into(),
        looped: true,
    });
    h.send(Command::Replace {
        id: 1,
        audio: other,
        at: Quantize::Beat,
        crossfade_beats: 1.0,
    })
    .unwrap();
    let r = run(&mut p, &mut h, period, 600);
    let signal = &r.groups[2][0];
    let max_step = signal
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0f32, f32::max);
    // The steepest a 330 Hz sine of 0.4 moves per sample is 0.4·2π·330/48000 ≈ 0.017.
    assert!(max_step < 0.03, "largest step {max_step}");
    assert!(
        r.notes
            .iter()
            .any(|n| matches!(n, Notification::Replaced { id: 1, .. }))
    );
    assert!(
        r.notes
            .iter()
            .any(|n| matches!(n, Notification::Retired(_))),
        "the old buffer leaves the processor"
    );
}

#[test]
fn pan_gain_mute_and_solo_do_what_they_say() {
    let period = 256;
    let (mut p, mut h) = rolling(period);
    h.send(launch(1, dc(0.5, 512, true), Group::Music, Quantize::Now))
        .unwrap();
    h.send(launch(2, dc(0.25, 512, true), Group::Bass, Quantize::Now))
        .unwrap();
    run(&mut p, &mut h, period, 4);
    let set = |id, params| Command::Set { id, params };
    h.send(set(
        1,
        LayerParams {
            pan: 1.0,
            gain: 0.5,
            ..LayerParams::default()
        },
    ))
    .unwrap();
    let r = run(&mut p, &mut h, period, 40);
    let (l, r_) = (
        r.groups[2][0].last().unwrap(),
        r.groups[2][1].last().unwrap(),
    );
    assert!(
        l.abs() < 1e-4 && (r_ - 0.25).abs() < 1e-3,
        "hard right at half gain: {l} {r_}"
    );

    h.send(set(
        2,
        LayerParams {
            solo: true,
            ..LayerParams::default()
        },
    ))
    .unwrap();
    let r = run(&mut p, &mut h, period, 40);
    assert!(
        r.groups[2][1].last().unwrap().abs() < 1e-4,
        "soloing 2 silences 1"
    );
    assert!((r.groups[1][0].last().unwrap() - 0.25).abs() < 1e-4);

    h.send(set(
        2,
        LayerParams {
            mute: true,
            solo: true,
            ..LayerParams::default()
        },
    ))
    .unwrap();
    let r = run(&mut p, &mut h, period, 40);
    assert!(r.groups[1][0].last().unwrap().abs() < 1e-4, "muted");
    // Every move glided: no step larger than a smoothed ramp allows.
    let steps = r.groups[1][0]
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0f32, f32::max);
    assert!(steps < 0.01, "mute is a glide, not a click: {steps}");
}

#[test]
fn a_low_pass_filter_darkens_a_layer() {
    let period = 256;
    let (mut p, mut h) = rolling(period);
    let params = LayerParams {
        filter: FilterSettings {
            mode: FilterMode::LowPass,
            cutoff_hz: 500.0,
            resonance: 0.0,
        },
        ..LayerParams::default()
    };
    h.send(Command::Launch {
        id: 1,
        audio: sine_loop(6000.0, 48_000, 0.5),
        group: Group::Music,
        params,
        at: Quantize::Now,
    })
    .unwrap();
    let r = run(&mut p, &mut h, period, 100);
    let tail = &r.groups[2][0][12_800..];
    let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len() as f32).sqrt();
    assert!(rms < 0.01, "6 kHz through a 500 Hz low-pass: rms {rms}");
}

#[test]
fn one_shots_end_and_slots_run_out_politely() {
    let period = 256;
    let (mut p, mut h) = rolling(period);
    h.send(launch(1, dc(0.1, 1000, false), Group::Voice, Quantize::Now))
        .unwrap();
    let r = run(&mut p, &mut h, period, 8);
    let ended = r.notes.iter().find_map(|n| match n {
        Notification::Ended { id: 1, frame } => Some(*frame),
        _ => None,
    });
    assert_eq!(ended, Some(1000));
    assert!(
        r.groups[3][0][..1000]
            .iter()
            .all(|s| (*s - 0.1).abs() < 1e-6)
    );
    assert!(r.groups[3][0][1000..].iter().all(|s| *s == 0.0));

    for id in 0..33 {
        h.send(launch(
            100 + id,
            dc(0.0, 64, true),
            Group::Music,
            Quantize::Now,
        ))
        .unwrap();
    }
    let r = run(&mut p, &mut h, period, 1);
    let refused = r
        .notes
        .iter()
        .filter(|n| matches!(n, Notification::Refused { .. }))
        .count();
    assert_eq!(
        refused, 1,
        "32 slots, the 33rd launch is refused and its buffer returned"
    );
}

#[test]
fn ten_thousand_busy_periods_allocate_nothing() {
    let period = 64;
    let (mut p, mut h) = rolling(period);
    let mut buffers = OutputBuffers::new(period);
    // Allocate every buffer up front; the processor may only move them.
    let mut audio: Vec<Box<LayerAudio>> = (0..400)
        .map(|i| sine_loop(110.0 + i as f32, 4800 + i * 7, 0.05))
        .collect();
    let mut returned = 0usize;
    for step in 0..10_000u64 {
        let id = step % 24;
        match step % 50 {
            0 if !audio.is_empty() => {
                let audio = audio.pop().unwrap();
                let group = Group::ALL[(step % 4) as usize];
                let at = [Quantize::Now, Quantize::Beat, Quantize::Bar][(step % 3) as usize];
                let _ = h.send(Command::Launch {
                    id,
                    audio,
                    group,
                    params: LayerParams {
                        reverb_send: 0.3,
                        delay_send: 0.2,
                        ..LayerParams::default()
                    },
                    at,
                });
            }
            10 if !audio.is_empty() => {
                let audio = audio.pop().unwrap();
                let _ = h.send(Command::Replace {
                    id,
                    audio,
                    at: Quantize::Now,
                    crossfade_beats: 0.25,
                });
            }
            20 => {
                let sweep = (step % 1000) as f32 / 1000.0;
                let _ = h.send(Command::Set {
                    id,
                    params: LayerParams {
                        gain: sweep * 2.0,
                        pan: sweep * 2.0 - 1.0,
                        mute: step % 7 == 0,
                        solo: step % 11 == 0,
                        filter: FilterSettings {
                            mode: [
                                FilterMode::LowPass,
                                FilterMode::HighPass,
                                FilterMode::BandPass,
                            ][(step % 3) as usize],
                            cutoff_hz: 100.0 + sweep * 10_000.0,
                            resonance: sweep,
                        },
                        reverb_send: sweep,
                        delay_send: 1.0 - sweep,
                    },
                });
            }
            30 => {
                let _ = h.send(Command::Remove {
                    id,
                    at: Quantize::Beat,
                });
            }
            40 => {
                let _ = h.send(Command::SetFx(MasterFx {
                    eq_low_db: (step % 13) as f32 - 6.0,
                    delay_beats: 0.25 + (step % 4) as f32 * 0.25,
                    ..MasterFx::default()
                }));
                let _ = h.send(Command::SetTempo(100.0 + (step % 60) as f64));
            }
            _ => {}
        }
        let mut outputs = buffers.outputs();
        assert_no_alloc(|| p.process(&mut outputs));
        while let Some(note) = h.poll() {
            if let Notification::Retired(_) | Notification::Refused { .. } = note {
                returned += 1;
            }
        }
    }
    assert!(
        returned > 100,
        "buffers came back to be dropped: {returned}"
    );
    let stats = h.stats();
    assert_eq!(
        stats
            .buffers_leaked
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(buffers.master[0].iter().all(|s| s.is_finite()));
}

#[test]
fn the_live_chain_plays_the_inputs_and_changes_allocate_nothing() {
    use djinn_engine::chain::ChainSettings;
    let period = 64;
    let (mut processor, mut handle) = rolling(period);
    let mut buffers = OutputBuffers::new(period);
    let tone: Vec<f32> = (0..period * 4000)
        .map(|i| 0.2 * (2.0 * PI * 440.0 * i as f32 / SR as f32).sin())
        .collect();
    let wide = ChainSettings {
        width: 1.8,
        tilt_db: 3.0,
        low_cut_hz: 120.0,
        compress: 0.6,
        drive: 0.4,
        ..ChainSettings::default()
    };
    let mut heard = [0.0f32; 2];
    for p in 0..4000 {
        let command = match p % 400 {
            0 => Some(Command::SetLiveChain {
                settings: ChainSettings::default(),
                on: true,
            }),
            100 => Some(Command::SetLiveChain {
                settings: wide,
                on: true,
            }),
            300 => Some(Command::SetLiveChain {
                settings: wide,
                on: false,
            }),
            _ => None,
        };
        if let Some(command) = command {
            handle.send(command).unwrap();
        }
        let input = &tone[p * period..(p + 1) * period];
        let mut outputs = buffers.outputs();
        outputs.input = [input, input];
        assert_no_alloc(|| processor.process(&mut outputs));
        let level = buffers.master[0]
            .iter()
            .map(|s| s.abs())
            .fold(0.0, f32::max);
        match p % 400 {
            50..=99 => heard[0] = heard[0].max(level),
            350..=399 => heard[1] = heard[1].max(level),
            _ => {}
        }
        while handle.poll().is_some() {}
    }
    assert!(heard[0] > 0.15, "on: {}", heard[0]);
    assert!(heard[1] < 1e-4, "off: {}", heard[1]);
}

/// A one-shot of white noise (a fixed sequence) at `amp`.
fn noise(frames: usize, amp: f32) -> Vec<[f32; 2]> {
    let mut state = 0x2545_f491u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        amp * (state as f32 / u32::MAX as f32 * 2.0 - 1.0)
    };
    (0..frames).map(|_| [next(), next()]).collect()
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// Runs `periods` periods with the callback under `assert_no_alloc`.
fn run_guarded(p: &mut Processor, h: &mut MixerHandle, period: usize, periods: usize) -> Run {
    let mut buffers = OutputBuffers::new(period);
    let mut result = Run {
        master_l: Vec::new(),
        master_r: Vec::new(),
        groups: vec![[Vec::new(), Vec::new()]; GROUPS],
        notes: Vec::new(),
    };
    for _ in 0..periods {
        let mut outputs = buffers.outputs();
        assert_no_alloc(|| p.process(&mut outputs));
        result.master_l.extend_from_slice(&buffers.master[0]);
        result.master_r.extend_from_slice(&buffers.master[1]);
        for (dst, src) in result.groups.iter_mut().zip(&buffers.groups) {
            dst[0].extend_from_slice(&src[0]);
            dst[1].extend_from_slice(&src[1]);
        }
        while let Some(note) = h.poll() {
            result.notes.push(note);
        }
    }
    result
}

#[test]
fn a_nan_in_a_layer_silences_one_block_and_the_next_layer_in_its_slot_is_heard() {
    // The master as a set plays it: reverb, delay, compressor and limiter all on, so a NaN
    // that reached them would stay in their state for good.
    let period = 256;
    let mut transport = Transport::default();
    transport.tempo = 120.0;
    transport.rolling = true;
    let (mut p, mut h) = Processor::new(SR, period, transport);
    let pad = LayerParams {
        reverb_send: 0.3,
        delay_send: 0.2,
        ..LayerParams::default()
    };
    h.send(Command::Launch {
        id: 1,
        audio: sine_loop(220.0, 48_000, 0.3),
        group: Group::Music,
        params: pad,
        at: Quantize::Now,
    })
    .unwrap();
    let before = run_guarded(&mut p, &mut h, period, 40);
    // One NaN in a quiet one-shot: the mixer gets it straight, as no control method
    // would hand it over.
    let mut poisoned = noise(24_000, 0.5);
    poisoned[10_000][0] = f32::NAN;
    let one_shot = |id, frames: Vec<[f32; 2]>, gain| Command::Launch {
        id,
        audio: Box::new(LayerAudio {
            frames: frames.into(),
            looped: false,
        }),
        group: Group::Drums,
        params: LayerParams {
            gain,
            ..LayerParams::default()
        },
        at: Quantize::Now,
    };
    h.send(one_shot(2, poisoned, 0.01)).unwrap();
    let during = run_guarded(&mut p, &mut h, period, 150);
    assert!(
        during
            .notes
            .iter()
            .any(|n| matches!(n, Notification::Ended { id: 2, .. })),
        "the poisoned one-shot ran out"
    );
    // The next layer takes the slot the poisoned one left: a clean one-shot of noise.
    h.send(one_shot(3, noise(48_000, 0.5), 1.0)).unwrap();
    let after = run_guarded(&mut p, &mut h, period, 150);

    let mut master = [&before, &during, &after]
        .into_iter()
        .flat_map(|r| r.master_l.iter().chain(&r.master_r));
    assert!(master.all(|s| s.is_finite()), "the master stays finite");
    let resets: Vec<_> = during
        .notes
        .iter()
        .filter_map(|n| match n {
            Notification::NonFinite { stage, layer, .. } => Some((*stage, *layer)),
            _ => None,
        })
        .collect();
    assert_eq!(
        resets,
        [(Stage::Layers, Some(2))],
        "one reset, of the layer at fault"
    );
    // Everything plays on: the pad through the master, the clean noise in its group.
    let pad_level = rms(&before.master_l[period * 20..]);
    let tail = after.master_l.len() - period * 40;
    assert!(pad_level > 0.1, "the pad is heard: {pad_level}");
    assert!(
        rms(&after.master_l[tail..]) > pad_level,
        "pad and noise are heard together: {} vs {pad_level}",
        rms(&after.master_l[tail..])
    );
    let drums = rms(&after.groups[0][0][period * 10..period * 100]);
    assert!(drums > 0.2, "the clean one-shot is heard: {drums}");
    // While the quiet one-shot played (its 24,000 frames from the first period on), the
    // block with the NaN is the only one the drums lost.
    let silent_blocks = during.groups[0][0][..period * 90]
        .chunks(period)
        .filter(|b| b.iter().all(|s| *s == 0.0))
        .count();
    assert_eq!(silent_blocks, 1);
}

#[test]
fn a_nan_on_an_input_resets_the_live_chain_and_the_inputs_come_back() {
    use djinn_engine::chain::ChainSettings;
    let period = 128;
    let (mut processor, mut handle) = rolling(period);
    handle
        .send(Command::SetLiveChain {
            settings: ChainSettings {
                compress: 0.5,
                low_cut_hz: 80.0,
                ..ChainSettings::default()
            },
            on: true,
        })
        .unwrap();
    let mut buffers = OutputBuffers::new(period);
    let mut tone: Vec<f32> = (0..period * 600)
        .map(|i| 0.2 * (2.0 * PI * 440.0 * i as f32 / SR as f32).sin())
        .collect();
    tone[period * 200 + 5] = f32::NAN;
    let mut notes = Vec::new();
    let mut last = 0.0f32;
    for p in 0..600 {
        let input = &tone[p * period..(p + 1) * period];
        let mut outputs = buffers.outputs();
        outputs.input = [input, input];
        assert_no_alloc(|| processor.process(&mut outputs));
        assert!(
            buffers.master.iter().flatten().all(|s| s.is_finite()),
            "period {p}"
        );
        last = buffers.master[0]
            .iter()
            .map(|s| s.abs())
            .fold(0.0, f32::max);
        while let Some(note) = handle.poll() {
            if let Notification::NonFinite { stage, .. } = note {
                notes.push(stage);
            }
        }
    }
    assert_eq!(notes, [Stage::Live]);
    assert!(last > 0.1, "the inputs are heard again: {last}");
}
