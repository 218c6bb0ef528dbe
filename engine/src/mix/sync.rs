//! Where the processor's transport takes its tempo and position from, period by period:
//! its own clock, an external MIDI clock (the [`ClockFollower`]) or JACK transport; and the
//! MIDI clock it sends when it is the master ([`ClockSender`]).
//!
//! The driver hands the processor the period's absolute frame time and the clock messages
//! that arrived in it; the processor renders the period in pieces split at those messages,
//! so a launch on a beat lands on the frame of the clock's own tick for that beat.

use rtrb::{Consumer, Producer, RingBuffer};
use serde::{Deserialize, Serialize};

use super::{Notification, Outputs, Processor};
use crate::clock::{ClockFollower, ClockMessage, ClockSender, LockState};
use crate::transport::TEMPO_RANGE;

/// Clock messages kept per period, in and out.
pub const CLOCK_MESSAGES: usize = 128;
/// Stamped clock messages waiting in a feed.
pub const CLOCK_FEED: usize = 1024;

/// A clock message from outside the JACK graph (an ALSA sequencer port), stamped on JACK's
/// microsecond clock (`jack_get_time`) when it arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StampedClock {
    pub usecs: u64,
    pub message: ClockMessage,
}

/// A queue for stamped clock messages: the producer goes to the thread that receives them,
/// the consumer to [`Processor::set_clock_feed`].
pub fn clock_feed() -> (Producer<StampedClock>, Consumer<StampedClock>) {
    RingBuffer::new(CLOCK_FEED)
}

/// Where the transport takes its tempo and position from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockSource {
    /// djinn's own transport.
    #[default]
    Internal,
    /// An external MIDI clock on the clock input.
    Midi,
    /// JACK transport, driven by another client.
    Jack,
}

/// A JACK transport position, read by the driver at the start of a period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExternalPosition {
    /// Beats since the transport's start; `None` when no timebase master publishes
    /// bars and beats (the position then follows the frame at djinn's tempo).
    pub beats: Option<f64>,
    /// The transport's frame.
    pub frame: u64,
    pub tempo: Option<f64>,
    pub rolling: bool,
}

/// The clock as reported with every position notification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockReport {
    pub source: ClockSource,
    pub master: bool,
    pub lock: LockState,
    /// RMS difference between the external ticks and the loop's prediction, frames.
    pub jitter_frames: f64,
    /// Standard error of the loop's phase, frames.
    pub phase_error_frames: f64,
}

/// Clock messages of one period with their frame offsets, in a list sized at construction.
struct Messages {
    items: [(u32, ClockMessage); CLOCK_MESSAGES],
    len: usize,
}

impl Messages {
    fn new() -> Self {
        Self {
            items: [(0, ClockMessage::Tick); CLOCK_MESSAGES],
            len: 0,
        }
    }

    /// Adds a message; false when the list is full (the message is dropped).
    fn push(&mut self, offset: u32, message: ClockMessage) -> bool {
        let Some(slot) = self.items.get_mut(self.len) else {
            return false;
        };
        *slot = (offset, message);
        self.len += 1;
        true
    }

    fn as_slice(&self) -> &[(u32, ClockMessage)] {
        self.items.get(..self.len).unwrap_or(&[])
    }
}

/// The processor's clock state.
pub(super) struct Sync {
    pub source: ClockSource,
    pub master: bool,
    pub follower: ClockFollower,
    sender: ClockSender,
    input: Messages,
    output: Messages,
    /// The frame time the next period should start at; a later one means an xrun.
    next_frame_time: Option<u64>,
    external: Option<ExternalPosition>,
    /// Stamped messages from outside the graph, and where the period starts in
    /// microseconds.
    feed: Option<Consumer<StampedClock>>,
    time_base: Option<u64>,
    /// A tempo glide: target and change per frame.
    ramp: Option<(f64, f64)>,
}

impl Sync {
    pub fn new(sample_rate: u32) -> Self {
        Self {
            source: ClockSource::Internal,
            master: false,
            follower: ClockFollower::new(sample_rate),
            sender: ClockSender::new(),
            input: Messages::new(),
            output: Messages::new(),
            next_frame_time: None,
            external: None,
            feed: None,
            time_base: None,
            ramp: None,
        }
    }

    pub fn report(&self) -> ClockReport {
        let (lock, jitter_frames, phase_error_frames) = if self.source == ClockSource::Midi {
            let follower = &self.follower;
            let phase = follower.phase_error_frames();
            (follower.state(), follower.jitter_frames(), phase)
        } else {
            (LockState::Idle, 0.0, 0.0)
        };
        ClockReport {
            source: self.source,
            master: self.master,
            lock,
            jitter_frames,
            phase_error_frames,
        }
    }
}

impl Processor {
    /// Hands the processor a raw MIDI message from the clock input, `offset` frames into
    /// the coming period. Messages must come in time order; other MIDI is ignored.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn clock_input(&mut self, offset: u32, bytes: &[u8]) {
        let Some(message) = ClockMessage::parse(bytes) else {
            return;
        };
        if !self.sync.input.push(offset, message) {
            self.count_dropped_clock(1);
        }
    }

    /// Counts clock messages lost for want of room: in the period's lists, or by a driver
    /// whose MIDI output was full.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn count_dropped_clock(&self, messages: u64) {
        if messages > 0 {
            self.stats
                .clock_messages_dropped
                .fetch_add(messages, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Takes stamped clock messages (an ALSA sequencer port) from `feed`. Call before the
    /// processor moves to the audio thread.
    pub fn set_clock_feed(&mut self, feed: Consumer<StampedClock>) {
        self.sync.feed = Some(feed);
    }

    /// Where the coming period starts on JACK's microsecond clock, so stamped messages can
    /// be placed in frames.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn clock_time_base(&mut self, usecs: u64) {
        self.sync.time_base = Some(usecs);
    }

    /// Hands the processor the JACK transport position at the start of the coming period.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn external_position(&mut self, position: ExternalPosition) {
        self.sync.external = Some(position);
    }

    /// The frame time of the next period when the driver has no frame clock of its own.
    pub(super) fn sync_frame_time(&self) -> u64 {
        self.sync.next_frame_time.unwrap_or(0)
    }

    pub(super) fn set_clock_source(&mut self, source: ClockSource) {
        if source != self.sync.source {
            self.sync.source = source;
            self.sync.follower = ClockFollower::new(self.sample_rate());
            self.sync.ramp = None;
        }
    }

    /// Whether the processor wants the JACK transport position each period.
    pub fn follows_jack(&self) -> bool {
        self.sync.source == ClockSource::Jack
    }

    /// The MIDI clock messages of the period just rendered, with their frame offsets.
    pub fn clock_output(&self) -> &[(u32, ClockMessage)] {
        self.sync.output.as_slice()
    }

    /// Renders the period that starts at absolute frame `frame_time` (JACK's
    /// `last_frame_time`): follows the clock source, renders, and plans the MIDI clock
    /// output. Every slice of `out` must be the same length.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn process_at(&mut self, frame_time: u64, out: &mut Outputs<'_>) {
        crate::dsp::flush_denormals();
        self.drain_commands();
        self.flush_backlog();
        let total = out.master[0].len();
        if total == 0 {
            return;
        }
        self.catch_up(frame_time);
        self.sync.output.len = 0;
        if self.sync.source == ClockSource::Midi {
            self.render_following(frame_time, out, total);
        } else {
            if self.sync.source == ClockSource::Jack {
                if let Some(position) = self.sync.external.take() {
                    self.follow_jack(position);
                }
            } else {
                self.glide_tempo(total);
            }
            self.plan_clock_output(total);
            self.render_span(out, 0, total, f64::INFINITY);
        }
        self.sync.input.len = 0;
        self.sync.next_frame_time = Some(frame_time + total as u64);
        self.stats
            .periods
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The frames an xrun skipped are played silently, so the transport and every loop
    /// stay on the frame clock's grid (the sent MIDI clock included).
    fn catch_up(&mut self, frame_time: u64) {
        let Some(expected) = self.sync.next_frame_time else {
            return;
        };
        let skipped = frame_time.saturating_sub(expected);
        // A jump of more than a minute is a new server or a clock reset, not an xrun.
        if skipped == 0 || skipped > 60 * u64::from(self.sample_rate()) {
            return;
        }
        self.stats
            .frames_skipped
            .fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
        if self.sync.source == ClockSource::Internal && self.transport.rolling {
            self.transport.advance(skipped);
            for layer in &mut self.layers {
                layer.skip(skipped as usize);
            }
        }
    }

    /// Feeds the follower the stamped messages that arrived since the last period, at the
    /// frames their stamps name (before this period: they are late by the way they came).
    fn take_feed(&mut self, frame_time: u64) {
        let rate = f64::from(self.sample_rate());
        let base = self.sync.time_base.take();
        while let Some(stamped) = self.sync.feed.as_mut().and_then(|f| f.pop().ok()) {
            let frame = match base {
                Some(usecs) => {
                    let ahead = (stamped.usecs as f64 - usecs as f64) * rate / 1e6;
                    (frame_time as f64 + ahead.round()).clamp(0.0, frame_time as f64) as u64
                }
                None => frame_time,
            };
            self.sync.follower.set_gated(false);
            self.follow_message(frame, stamped.message);
        }
    }

    fn render_following(&mut self, frame_time: u64, out: &mut Outputs<'_>, total: usize) {
        self.take_feed(frame_time);
        let last = total.saturating_sub(1);
        let offset_of = |sync: &Sync, index: usize| {
            sync.input
                .as_slice()
                .get(index)
                .map(|&(offset, message)| ((offset as usize).min(last), message))
        };
        let (mut start, mut next) = (0, 0);
        while start < total {
            // Every message stamped at or before `start` moves the follower first.
            while let Some((offset, message)) = offset_of(&self.sync, next) {
                if offset > start {
                    break;
                }
                self.follow_message(frame_time + offset as u64, message);
                next += 1;
            }
            self.follow_midi(frame_time + start as u64);
            if start == 0 {
                // The clock djinn sends follows the period's first position.
                self.plan_clock_output(total);
            }
            let end = offset_of(&self.sync, next).map_or(total, |(offset, _)| offset);
            let ceiling = self.following_ceiling();
            self.render_span(out, start, end, ceiling);
            start = end;
        }
        if let Some(event) = self.sync.follower.update(frame_time + total as u64) {
            self.notify(Notification::Clock(event));
        }
    }

    /// Feeds the follower one message and publishes what it makes of it.
    fn follow_message(&mut self, frame: u64, message: ClockMessage) {
        if let Some(event) = self.sync.follower.feed(frame, message) {
            self.notify(Notification::Clock(event));
        }
    }

    fn following_ceiling(&self) -> f64 {
        let follower = &self.sync.follower;
        match (follower.state(), follower.beats_at(u64::MAX)) {
            (LockState::FreeRunning, _) | (_, None) => f64::INFINITY,
            (_, Some(ceiling)) => ceiling,
        }
    }

    fn follow_midi(&mut self, frame: u64) {
        let follower = &self.sync.follower;
        if let Some(tempo) = follower.tempo() {
            self.transport.tempo = tempo.clamp(*TEMPO_RANGE.start(), *TEMPO_RANGE.end());
        }
        let rolling = follower.running();
        match follower.beats_at(frame) {
            Some(beats) => {
                let position = self.transport.frame;
                self.transport.set_position(position, beats, rolling);
            }
            None => self.transport.rolling = false,
        }
    }

    fn follow_jack(&mut self, position: ExternalPosition) {
        if let Some(tempo) = position.tempo.filter(|t| TEMPO_RANGE.contains(t)) {
            self.transport.tempo = tempo;
        }
        let beats = position
            .beats
            .unwrap_or_else(|| position.frame as f64 / self.frames_per_beat());
        self.transport
            .set_position(position.frame, beats, position.rolling);
    }

    fn glide_tempo(&mut self, frames: usize) {
        let Some((target, per_frame)) = self.sync.ramp else {
            return;
        };
        let step = per_frame * frames as f64;
        let tempo = self.transport.tempo;
        if (target - tempo).abs() <= step.abs() {
            self.transport.tempo = target;
            self.sync.ramp = None;
        } else {
            self.transport.tempo = tempo + step;
        }
    }

    /// Starts a tempo glide to `tempo` over `beats` beats (at the mean tempo); no glide when
    /// `beats` is 0.
    pub(super) fn ramp_tempo(&mut self, tempo: f64, beats: f64) {
        if beats <= 0.0 {
            if self.sync.ramp.is_some_and(|(target, _)| target == tempo) {
                // The glide already heads there.
                return;
            }
            self.transport.tempo = tempo;
            self.sync.ramp = None;
            return;
        }
        let mean = 0.5 * (tempo + self.transport.tempo);
        let frames = beats * 60.0 * f64::from(self.sample_rate()) / mean;
        let per_frame = (tempo - self.transport.tempo) / frames.max(1.0);
        self.sync.ramp = Some((tempo, per_frame));
    }

    fn plan_clock_output(&mut self, total: usize) {
        if !self.sync.master {
            return;
        }
        let beats = self.transport.beats();
        let per_frame = 1.0 / self.frames_per_beat();
        let rolling = self.transport.rolling;
        let Sync { sender, output, .. } = &mut self.sync;
        let mut dropped = 0;
        sender.period(beats, per_frame, total, rolling, |offset, message| {
            dropped += u64::from(!output.push(offset as u32, message));
        });
        self.count_dropped_clock(dropped);
    }

    /// Renders frames `start..end` in pieces of at most `max_block`.
    fn render_span(&mut self, out: &mut Outputs<'_>, start: usize, end: usize, ceiling: f64) {
        let mut at = start;
        while at < end {
            let n = (end - at).min(self.max_block);
            self.render(out, at, n, ceiling);
            at += n;
        }
    }
}
