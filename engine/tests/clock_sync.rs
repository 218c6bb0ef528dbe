//! The mixer on an external clock: launches land on the clock's own bar ticks however the
//! ticks jitter, the transport stops and starts with the clock, an xrun does not move the
//! grid, and the MIDI clock djinn sends is sample-accurate. None of it allocates.

use assert_no_alloc::{AllocDisabler, assert_no_alloc};
use djinn_engine::clock::{ClockEvent, ClockMessage};
use djinn_engine::mix::{
    ClockSource, Command, Group, LayerAudio, LayerParams, MasterFx, MixerHandle, Notification,
    OutputBuffers, Processor, Quantize,
};
use djinn_engine::transport::Transport;

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

const SR: u32 = 48_000;
const PERIOD: usize = 256;

fn mixer(source: ClockSource, master: bool) -> (Processor, MixerHandle) {
    let mut transport = Transport::default();
    transport.rolling = true;
    let (processor, mut handle) = Processor::new(SR, PERIOD, transport);
    let dry = MasterFx {
        reverb_mix: 0.0,
        delay_mix: 0.0,
        comp_ratio: 1.0,
        limiter_ceiling_db: 0.0,
        ..MasterFx::default()
    };
    handle.send(Command::SetFx(dry)).unwrap();
    handle.send(Command::SetClockSource(source)).unwrap();
    handle.send(Command::SetMasterClock(master)).unwrap();
    (processor, handle)
}

fn click() -> Box<LayerAudio> {
    let mut frames = vec![[0.0f32; 2]; 2_000];
    frames[0] = [0.5, 0.5];
    Box::new(LayerAudio {
        frames: frames.into(),
        looped: false,
    })
}

/// An external clock at `bpm` whose intervals each move by up to `jitter` (uniform, one by
/// one, as jack_midi_clock -J does), starting at `first`.
fn clock_ticks(bpm: f64, jitter: f64, first: u64, count: usize) -> Vec<u64> {
    let period = 60.0 * f64::from(SR) / (24.0 * bpm);
    let mut state = 7u64;
    let mut t = first as f64;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let at = t.round() as u64;
            t += period * (1.0 + jitter * unit);
            at
        })
        .collect()
}

/// Drives the processor period by period from frame `start`, feeding `messages` (absolute
/// frame, message) in their periods; returns the drums channel and the notifications.
fn drive(
    processor: &mut Processor,
    handle: &mut MixerHandle,
    start: u64,
    periods: usize,
    messages: &[(u64, ClockMessage)],
    mut between: impl FnMut(usize, &mut MixerHandle),
) -> (Vec<f32>, Vec<Notification>, Vec<(u64, ClockMessage)>) {
    let mut buffers = OutputBuffers::new(PERIOD);
    let mut drums = Vec::with_capacity(periods * PERIOD);
    let mut notes = Vec::new();
    let mut sent = Vec::new();
    let mut next = 0;
    for period in 0..periods {
        between(period, handle);
        let frame = start + (period * PERIOD) as u64;
        while let Some(&(at, message)) = messages.get(next) {
            if at >= frame + PERIOD as u64 {
                break;
            }
            let (bytes, len) = message.encode();
            let offset = at.saturating_sub(frame) as u32;
            assert_no_alloc(|| processor.clock_input(offset, &bytes[..len]));
            next += 1;
        }
        let mut out = buffers.outputs();
        assert_no_alloc(|| processor.process_at(frame, &mut out));
        drums.extend_from_slice(&buffers.groups[Group::Drums.index()][0]);
        sent.extend(
            processor
                .clock_output()
                .iter()
                .map(|&(offset, m)| (frame + u64::from(offset), m)),
        );
        while let Some(note) = handle.poll() {
            notes.push(note);
        }
    }
    (drums, notes, sent)
}

/// The frames of the ticks among the clock messages djinn sent.
fn ticks_in(sent: &[(u64, ClockMessage)]) -> Vec<u64> {
    sent.iter()
        .filter(|(_, m)| *m == ClockMessage::Tick)
        .map(|(f, _)| *f)
        .collect()
}

/// Between periods for [`drive`]: a click launched on the next bar every `every` periods.
fn click_on_the_bar_every(every: usize) -> impl FnMut(usize, &mut MixerHandle) {
    move |period, handle| {
        if period > 0 && period % every == 0 {
            let command = Command::Launch {
                id: period as u64,
                audio: click(),
                group: Group::Drums,
                params: LayerParams::default(),
                at: Quantize::Bar,
            };
            handle.send(command).unwrap();
        }
    }
}

/// Every click in `drums` (which begins at frame `start`) is on a bar tick of `ticks` (the
/// first is bar 1's), and there are at least `at_least` of them.
fn assert_clicks_on_bar_ticks(
    drums: &[f32],
    start: u64,
    ticks: &[u64],
    at_least: usize,
    case: &str,
) {
    let onsets: Vec<u64> = drums
        .iter()
        .enumerate()
        .filter(|(_, s)| s.abs() > 0.25)
        .map(|(i, _)| start + i as u64)
        .collect();
    assert!(onsets.len() >= at_least, "{case}: {onsets:?}");
    for onset in onsets {
        let k = ticks.iter().position(|&t| t == onset);
        assert!(
            k.is_some_and(|k| k % 96 == 0),
            "{case}: a click at {onset} is not on a bar tick (next tick index {:?})",
            ticks.iter().position(|&t| t >= onset)
        );
    }
}

#[test]
fn bar_launches_land_on_the_clock_s_bar_ticks_however_the_ticks_jitter() {
    for (bpm, jitter) in [(90.0, 0.0), (123.4, 0.0), (128.0, 0.1), (174.0, 0.1)] {
        let (mut processor, mut handle) = mixer(ClockSource::Midi, false);
        let start = 1_000_000u64;
        let ticks = clock_ticks(bpm, jitter, start + 700, 24 * 4 * 6);
        let mut messages = vec![(start + 300, ClockMessage::Start)];
        messages.extend(ticks.iter().map(|&t| (t, ClockMessage::Tick)));
        let periods = ((ticks.last().unwrap() - start) as usize) / PERIOD;
        // A click launched on the next bar, once per bar from bar 2 on.
        let launch_every = periods / 6;
        let (drums, notes, _) = drive(
            &mut processor,
            &mut handle,
            start,
            periods,
            &messages,
            click_on_the_bar_every(launch_every),
        );
        assert_clicks_on_bar_ticks(
            &drums,
            start,
            &ticks,
            4,
            &format!("{bpm} BPM, {jitter} jitter"),
        );
        assert!(
            notes
                .iter()
                .any(|n| matches!(n, Notification::Clock(ClockEvent::Locked { .. }))),
            "{bpm}: locked"
        );
    }
}

#[test]
fn stop_holds_the_position_and_a_lost_clock_free_runs() {
    // The clock stops the transport, then goes quiet: stopped, not lost.
    let (mut processor, mut handle) = mixer(ClockSource::Midi, false);
    let ticks = clock_ticks(120.0, 0.0, 1_000, 24 * 8);
    let mut messages = vec![(500, ClockMessage::Start)];
    messages.extend(ticks.iter().map(|&t| (t, ClockMessage::Tick)));
    let stop_at = ticks[24 * 4] + 10;
    messages.retain(|&(t, _)| t < stop_at);
    messages.push((stop_at, ClockMessage::Stop));
    let periods = 24 * 8 * 1_000 / PERIOD + 200;
    let (_, notes, _) = drive(
        &mut processor,
        &mut handle,
        0,
        periods,
        &messages,
        |_, _| {},
    );
    let events = clock_events(&notes);
    assert_eq!(events[0], ClockEvent::Started);
    assert!(events.contains(&ClockEvent::Stopped {
        beats: 4.0 + 1.0 / 24.0
    }));
    assert!(!events.iter().any(|e| matches!(e, ClockEvent::Lost { .. })));
    assert!(
        !processor.transport().rolling,
        "a stopped clock stops the transport"
    );
    let held = processor.transport().beats();
    assert!(
        (held - 4.0).abs() < 1e-9,
        "the position holds at the last tick: {held}"
    );

    // The clock dies while running: lost, and the transport runs on at its tempo.
    let (mut processor, mut handle) = mixer(ClockSource::Midi, false);
    let ticks = clock_ticks(120.0, 0.0, 1_000, 24 * 4);
    let mut messages = vec![(500, ClockMessage::Start)];
    messages.extend(ticks.iter().map(|&t| (t, ClockMessage::Tick)));
    let (_, notes, _) = drive(
        &mut processor,
        &mut handle,
        0,
        periods,
        &messages,
        |_, _| {},
    );
    let events = clock_events(&notes);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClockEvent::Lost { tempo } if (tempo - 120.0).abs() < 0.01)),
        "{events:?}"
    );
    assert!(processor.transport().rolling, "free-running");
    let end = (periods * PERIOD) as f64;
    let expected = (end - 1_000.0) / 24_000.0;
    let beats = processor.transport().beats();
    assert!(
        (beats - expected).abs() < 0.01,
        "{beats} beats, {expected} expected"
    );
}

fn clock_events(notes: &[Notification]) -> Vec<ClockEvent> {
    notes
        .iter()
        .filter_map(|n| match n {
            Notification::Clock(event) => Some(*event),
            _ => None,
        })
        .collect()
}

#[test]
fn the_clock_djinn_sends_is_sample_accurate_and_an_xrun_does_not_move_it() {
    let (mut processor, mut handle) = mixer(ClockSource::Internal, true);
    handle.send(Command::SetTempo(123.4)).unwrap();
    let mut buffers = OutputBuffers::new(PERIOD);
    let mut sent = Vec::new();
    let mut frame = 5_000u64;
    for period in 0..2_000 {
        // Period 1,000 never happens: an xrun, and JACK's frame clock jumps.
        if period == 1_000 {
            frame += PERIOD as u64;
        }
        let mut out = buffers.outputs();
        assert_no_alloc(|| processor.process_at(frame, &mut out));
        sent.extend(
            processor
                .clock_output()
                .iter()
                .map(|&(offset, m)| (frame + u64::from(offset), m)),
        );
        frame += PERIOD as u64;
        while handle.poll().is_some() {}
    }
    assert_eq!(sent[0], (5_000, ClockMessage::Start));
    let ticks = ticks_in(&sent);
    let exact = 60.0 * f64::from(SR) / (24.0 * 123.4);
    // Each tick is on the first frame at or after its place on the grid.
    let on_grid = |t: u64, want: f64| (-1e-6..1.0).contains(&(t as f64 - want));
    for (k, &t) in ticks.iter().enumerate() {
        let want = 5_000.0 + k as f64 * exact;
        // The grid stays on the frame clock; only ticks that fell in the lost period are
        // missing.
        assert!(
            on_grid(t, want) || t > 5_000 + 1_000 * PERIOD as u64,
            "tick {k} at {t}, grid {want}"
        );
    }
    let after: Vec<u64> = ticks
        .iter()
        .copied()
        .filter(|&t| t > 5_000 + 1_001 * PERIOD as u64)
        .collect();
    for t in &after {
        let k = ((*t as f64 - 5_000.0) / exact).floor();
        assert!(
            on_grid(*t, 5_000.0 + k * exact),
            "after the xrun, tick at {t} is off the grid"
        );
    }
    let gaps: Vec<u64> = after.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().max().unwrap() - gaps.iter().min().unwrap() <= 1);
}

#[test]
fn as_the_master_bar_launches_land_on_the_bar_ticks_djinn_sends() {
    for bpm in [123.4, 97.3, 171.1] {
        let (mut processor, mut handle) = mixer(ClockSource::Internal, true);
        handle.send(Command::SetTempo(bpm)).unwrap();
        let start = 3_000u64;
        let periods = (8.0 * 4.0 * 60.0 * f64::from(SR) / bpm) as usize / PERIOD;
        // A click launched on the next bar, once per bar or so from bar 2 on.
        let launch_every = periods / 7;
        let (drums, _, sent) = drive(
            &mut processor,
            &mut handle,
            start,
            periods,
            &[],
            click_on_the_bar_every(launch_every),
        );
        let ticks = ticks_in(&sent);
        assert_clicks_on_bar_ticks(&drums, start, &ticks, 5, &format!("{bpm} BPM"));
    }
}

#[test]
fn ticks_stamped_in_microseconds_from_outside_the_graph_land_launches_on_the_bar() {
    // An ALSA sequencer's ticks arrive after the fact, stamped on JACK's microsecond clock:
    // the processor places them at their frames and launches on the loop's prediction.
    let (mut processor, mut handle) = mixer(ClockSource::Midi, false);
    let (mut feed, consumer) = djinn_engine::mix::clock_feed();
    processor.set_clock_feed(consumer);
    let start_usecs = 5_000_000u64;
    let bpm = 128.0;
    let tick_us = 60e6 / (24.0 * bpm);
    let ticks: Vec<u64> = (0..24 * 4 * 6)
        .map(|k| start_usecs + 20_000 + (k as f64 * tick_us).round() as u64)
        .collect();
    let usecs_of = |frame: u64| start_usecs + frame * 1_000_000 / u64::from(SR);
    let mut buffers = OutputBuffers::new(PERIOD);
    let mut drums = Vec::new();
    let mut next = 0;
    feed.push(djinn_engine::mix::StampedClock {
        usecs: start_usecs + 10_000,
        message: ClockMessage::Start,
    })
    .unwrap();
    let periods = (ticks.last().unwrap() - start_usecs) as usize * SR as usize / 1_000_000 / PERIOD;
    for period in 0..periods {
        let frame = (period * PERIOD) as u64;
        // Everything stamped before this period has arrived by now.
        while ticks.get(next).is_some_and(|&t| t < usecs_of(frame)) {
            feed.push(djinn_engine::mix::StampedClock {
                usecs: ticks[next],
                message: ClockMessage::Tick,
            })
            .unwrap();
            next += 1;
        }
        if period > 0 && period % 500 == 0 {
            handle
                .send(Command::Launch {
                    id: period as u64,
                    audio: click(),
                    group: Group::Drums,
                    params: LayerParams::default(),
                    at: Quantize::Bar,
                })
                .unwrap();
        }
        processor.clock_time_base(usecs_of(frame));
        let mut out = buffers.outputs();
        assert_no_alloc(|| processor.process_at(frame, &mut out));
        drums.extend_from_slice(&buffers.groups[Group::Drums.index()][0]);
        while handle.poll().is_some() {}
    }
    let onsets: Vec<u64> = drums
        .iter()
        .enumerate()
        .filter(|(_, s)| s.abs() > 0.25)
        .map(|(i, _)| i as u64)
        .collect();
    assert!(onsets.len() >= 3, "{onsets:?}");
    for onset in onsets {
        let onset_us = usecs_of(onset);
        let bar = ticks
            .iter()
            .step_by(96)
            .min_by_key(|&&t| (t as i64 - onset_us as i64).abs())
            .unwrap();
        let error_us = onset_us as i64 - *bar as i64;
        assert!(
            error_us.abs() <= 1_000,
            "a bar launch {error_us} µs from the clock's bar tick"
        );
    }
}
