//! MIDI beat clock: a [`ClockFollower`] that locks to an external 24-ppqn clock, and a
//! [`ClockSender`] that is one.
//!
//! Both are plain state machines fed with absolute frame times (JACK's frame clock, or any
//! other monotonic frame count), so the same code serves JACK MIDI ports read inside the
//! process callback and timestamps from an ALSA sequencer. Neither allocates: both run on
//! the realtime thread.
//!
//! The follower separates the two things a clock carries. *Tempo* comes from a second-order
//! delay-locked loop on the tick times (an alpha-beta filter whose gains start at the
//! growing-memory least-squares values, so it acquires within a beat, and settle at a fixed
//! bandwidth, so it stays steady under jitter; a drift detector widens the loop again when
//! the source changes tempo). *Phase* comes from the ticks themselves: the musical position
//! moves on at the estimated tempo between ticks but never passes the next tick before it
//! arrives, and snaps to it when it does. A launch quantized to a beat or a bar therefore
//! lands on the frame of the clock's own tick for that beat, however jittery the clock.

use crate::transport::ON_BEAT;

/// Clock ticks per quarter note.
pub const PPQN: u32 = 24;

/// Ticks of growing memory at which the loop's gains stop narrowing (96 beats): the
/// steady-state bandwidth. It can be this narrow because real tempo changes are left to the
/// drift detector; a clock whose intervals jitter one by one then settles within ±0.1 BPM.
const STEADY_TICKS: u32 = 96 * PPQN;
/// Ticks over which the drift detector measures the mean tick interval (two beats).
const DRIFT_WINDOW: usize = 48;
/// How far, in standard errors of a mean of independent intervals, that mean may stray
/// from the loop's period before the loop widens.
const DRIFT_SIGMAS: f64 = 6.0;
/// How far, in standard deviations of its own recent history, that mean may stray.
const DRIFT_HISTORY_SIGMAS: f64 = 5.0;
/// The smallest drift acted on, as a fraction of the period (0.2 %: 0.25 BPM at 124).
const DRIFT_FLOOR: f64 = 0.002;
/// Ticks in a row whose window must show the drift before the loop acts on it. A single
/// late tick (a source that missed a cycle) moves the window's mean only while it is at
/// one end of the window, newest or oldest, for one tick each time; a real tempo change
/// keeps moving it.
const DRIFT_CONFIRM: u32 = 2;
/// The memory, in ticks, the loop keeps when ticks come back after a silence.
const RESUME_MEMORY: u32 = 48;
/// Ticks of silence, in beats, after which the follower free-runs.
const LOST_AFTER_BEATS: f64 = 2.0;
/// A lock is declared when three standard errors of the tempo estimate are within this.
const LOCK_BPM: f64 = 0.1;
/// Beats kept short of the next tick while it has not arrived.
const GATE: f64 = 1e-6;

/// A MIDI system real-time or common message that concerns the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMessage {
    /// 0xF8: one 24th of a quarter note.
    Tick,
    /// 0xFA: play from the top; the next tick is position 0.
    Start,
    /// 0xFB: play on from the current song position.
    Continue,
    /// 0xFC: stop; ticks may keep coming, the position holds.
    Stop,
    /// 0xF2: song position pointer, in sixteenth notes (six ticks each).
    SongPosition(u16),
}

impl ClockMessage {
    /// Reads a raw MIDI message; anything that is not clock-related is `None`.
    pub fn parse(bytes: &[u8]) -> Option<ClockMessage> {
        match bytes {
            [0xF8, ..] => Some(ClockMessage::Tick),
            [0xFA, ..] => Some(ClockMessage::Start),
            [0xFB, ..] => Some(ClockMessage::Continue),
            [0xFC, ..] => Some(ClockMessage::Stop),
            [0xF2, lsb, msb, ..] => Some(ClockMessage::SongPosition(
                u16::from(*lsb & 0x7F) | (u16::from(*msb & 0x7F) << 7),
            )),
            _ => None,
        }
    }

    /// The message's bytes and their count.
    pub fn encode(self) -> ([u8; 3], usize) {
        match self {
            ClockMessage::Tick => ([0xF8, 0, 0], 1),
            ClockMessage::Start => ([0xFA, 0, 0], 1),
            ClockMessage::Continue => ([0xFB, 0, 0], 1),
            ClockMessage::Stop => ([0xFC, 0, 0], 1),
            ClockMessage::SongPosition(sixteenths) => (
                [
                    0xF2,
                    (sixteenths & 0x7F) as u8,
                    ((sixteenths >> 7) & 0x7F) as u8,
                ],
                3,
            ),
        }
    }
}

/// How sure the follower is of the external clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    /// No tick seen yet.
    Idle,
    /// Ticks arrive; the tempo is not yet known to ±0.1 BPM.
    Acquiring,
    /// Tempo known to ±0.1 BPM; the position follows the ticks.
    Locked,
    /// Ticks stopped for more than two beats: the position runs on at the last tempo.
    FreeRunning,
}

/// Something the follower wants the world to know.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockEvent {
    /// Locked to ±0.1 BPM (three standard errors), `after_beats` beats of ticks after the
    /// follower began acquiring.
    Locked {
        tempo: f64,
        after_beats: f64,
    },
    Lost {
        tempo: f64,
    },
    Started,
    Continued {
        beats: f64,
    },
    Stopped {
        beats: f64,
    },
}

/// A follower of an external MIDI clock. See the module documentation.
#[derive(Debug, Clone)]
pub struct ClockFollower {
    sample_rate: f64,
    state: LockState,
    /// Filtered time of the last tick, frames (relative to `origin`).
    filtered: f64,
    /// Estimated frames per tick.
    period: f64,
    /// Ticks of memory the loop has now.
    memory: u32,
    /// Frame time of the last tick as received.
    last_tick: Option<u64>,
    /// First frame time seen; times are kept relative to it so f64 stays exact.
    origin: u64,
    /// Running mean of squared residuals, frames².
    residual_sq: f64,
    /// Running mean of the squared difference between one tick interval and the period.
    interval_sq: f64,
    /// Running mean of the squared difference between the windowed mean interval and the
    /// period, while no drift is seen.
    window_sq: f64,
    window_count: u32,
    /// Ticks in a row whose window strayed; see [`DRIFT_CONFIRM`].
    drift_run: u32,
    /// Ticks counted since the follower started.
    count: u64,
    /// The last `DRIFT_WINDOW + 1` ticks as (relative time, count), a ring.
    recent: [(f64, u64); DRIFT_WINDOW + 1],
    recent_len: usize,
    recent_at: usize,
    /// Whether the song position advances (between Start/Continue and Stop).
    running: bool,
    /// A Start or Continue was received; rolling begins at the next tick.
    armed: bool,
    /// The next tick starts the loop's phase afresh (after Start or Continue the source may
    /// resume on a grid of its own).
    rephase: bool,
    /// Position between ticks held short of the next tick (ticks that arrive in time, as on
    /// a JACK MIDI port) or predicted from the loop (ticks that arrive late, as from ALSA).
    gated: bool,
    /// Song position of the last tick, in ticks, and of the next one.
    tick_index: i64,
    next_index: i64,
}

impl ClockFollower {
    pub fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate: f64::from(sample_rate),
            state: LockState::Idle,
            filtered: 0.0,
            period: 0.0,
            memory: 0,
            last_tick: None,
            origin: 0,
            residual_sq: 0.0,
            interval_sq: 0.0,
            window_sq: 0.0,
            window_count: 0,
            drift_run: 0,
            count: 0,
            recent: [(0.0, 0); DRIFT_WINDOW + 1],
            recent_len: 0,
            recent_at: 0,
            running: false,
            armed: false,
            rephase: false,
            gated: true,
            tick_index: -1,
            next_index: 0,
        }
    }

    pub fn state(&self) -> LockState {
        self.state
    }

    /// Whether the song position moves (the external transport plays).
    pub fn running(&self) -> bool {
        self.running
    }

    /// The estimated tempo, once two ticks have been seen.
    pub fn tempo(&self) -> Option<f64> {
        (self.period > 0.0).then(|| self.bpm(self.period))
    }

    fn bpm(&self, period: f64) -> f64 {
        60.0 * self.sample_rate / (f64::from(PPQN) * period)
    }

    /// The RMS difference between the ticks and the loop's prediction, in frames: how
    /// jittery the source is.
    pub fn jitter_frames(&self) -> f64 {
        self.residual_sq.sqrt()
    }

    /// The standard error of the tempo estimate, BPM.
    pub fn tempo_error(&self) -> f64 {
        if self.period <= 0.0 || self.memory < 3 {
            return f64::INFINITY;
        }
        let n = f64::from(self.memory);
        // Least-squares slope error over n equally spaced points.
        let period_error = self.jitter_frames().max(0.5) * (12.0 / (n * n * n - n)).sqrt();
        self.bpm(self.period) * period_error / self.period
    }

    /// The standard error of the loop's phase, frames: how far the filtered tick time may
    /// be from the line the ticks scatter about.
    pub fn phase_error_frames(&self) -> f64 {
        if self.memory < 2 {
            return f64::INFINITY;
        }
        let n = f64::from(self.memory);
        self.jitter_frames() * (2.0 * (2.0 * n - 1.0) / (n * (n + 1.0))).sqrt()
    }

    /// Feeds one message received at absolute frame `frame`.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn feed(&mut self, frame: u64, message: ClockMessage) -> Option<ClockEvent> {
        match message {
            ClockMessage::Tick => self.tick(frame),
            ClockMessage::Start => {
                self.next_index = 0;
                self.armed = true;
                self.rephase = true;
                self.running = false;
                Some(ClockEvent::Started)
            }
            ClockMessage::Continue => {
                self.armed = true;
                self.rephase = true;
                self.running = false;
                Some(ClockEvent::Continued {
                    beats: self.next_index as f64 / f64::from(PPQN),
                })
            }
            ClockMessage::Stop => {
                let was = self.running || self.armed;
                self.running = false;
                self.armed = false;
                was.then_some(ClockEvent::Stopped {
                    beats: self.next_index as f64 / f64::from(PPQN),
                })
            }
            ClockMessage::SongPosition(sixteenths) => {
                self.next_index = i64::from(sixteenths) * i64::from(PPQN / 4);
                None
            }
        }
    }

    fn tick(&mut self, frame: u64) -> Option<ClockEvent> {
        let Some(last) = self.last_tick else {
            self.origin = frame;
            self.last_tick = Some(frame);
            self.rephase = false;
            self.filtered = 0.0;
            self.memory = 1;
            self.state = LockState::Acquiring;
            self.remember(0.0, 1);
            self.advance_position(1);
            return None;
        };
        let z = frame.saturating_sub(self.origin) as f64;
        let gap = frame.saturating_sub(last) as f64;
        if self.period <= 0.0 {
            // The second tick: the first interval is the first period estimate.
            self.period = gap.max(1.0);
            self.remember(z, 1);
            return self.restart_on(frame, z, 2, 1.0);
        }
        // Ticks lost on the way (or a clock that paused): count every tick the gap spans.
        let steps = (gap / self.period).round().max(1.0);
        if self.state == LockState::FreeRunning || std::mem::take(&mut self.rephase) {
            // Coming back from silence, or starting to play: keep the tempo, restart the
            // phase on this tick.
            if self.state == LockState::FreeRunning {
                self.state = LockState::Acquiring;
            }
            self.recent_len = 0;
            self.remember(z, steps as u64);
            return self.restart_on(frame, z, self.memory.min(RESUME_MEMORY), steps);
        }
        let predicted = self.filtered + steps * self.period;
        let residual = z - predicted;
        self.memory = self.memory.saturating_add(1);
        let interval = gap / steps - self.period;
        let weight = 1.0 / f64::from(self.memory.min(200));
        self.interval_sq += (interval * interval - self.interval_sq) * weight;
        self.remember(z, steps as u64);
        if self.drifting() {
            // The source changed tempo: acquire afresh from this interval, as at the start,
            // rather than unwind a loop full of the old tempo.
            self.period = (gap / steps).max(1.0);
            self.recent_len = 0;
            self.remember(z, 0);
            return self.restart_on(frame, z, 2, steps);
        }
        let n = f64::from(self.memory.min(STEADY_TICKS));
        let alpha = 2.0 * (2.0 * n - 1.0) / (n * (n + 1.0));
        let beta = 6.0 / (n * (n + 1.0));
        self.filtered = predicted + alpha * residual;
        self.period = (self.period + beta * residual / steps).max(1.0);
        self.residual_sq += (residual * residual - self.residual_sq) * weight;
        self.last_tick = Some(frame);
        self.advance_position(steps as i64);
        if self.state == LockState::Acquiring
            && self.memory >= PPQN
            && 3.0 * self.tempo_error() <= LOCK_BPM
        {
            self.state = LockState::Locked;
            return Some(ClockEvent::Locked {
                tempo: self.bpm(self.period),
                after_beats: f64::from(self.memory - 1) / f64::from(PPQN),
            });
        }
        None
    }

    /// Starts the loop's phase afresh on this tick, with `memory` ticks of history, and
    /// moves the song position on by `steps` ticks.
    fn restart_on(&mut self, frame: u64, z: f64, memory: u32, steps: f64) -> Option<ClockEvent> {
        self.filtered = z;
        self.memory = memory;
        self.last_tick = Some(frame);
        self.advance_position(steps as i64);
        None
    }

    /// Keeps a tick for the drift detector: its relative time and the ticks it moved on.
    fn remember(&mut self, time: f64, steps: u64) {
        self.count += steps;
        if let Some(slot) = self.recent.get_mut(self.recent_at) {
            *slot = (time, self.count);
        }
        self.recent_at = (self.recent_at + 1) % (DRIFT_WINDOW + 1);
        self.recent_len = (self.recent_len + 1).min(DRIFT_WINDOW + 1);
    }

    /// Whether the mean interval of the last two beats strays from the loop's period more
    /// than jitter explains: the source changed tempo, and the loop should widen to follow.
    ///
    /// Two yardsticks, because clocks jitter in two ways: ticks scattered about an exact
    /// grid (a mean over many intervals is then very steady) and intervals jittered one by
    /// one (the phase wanders, and a mean of n intervals varies as 1/√n). The first is
    /// judged by the windowed mean's own recent history, the second by the interval spread.
    fn drifting(&mut self) -> bool {
        if self.recent_len <= DRIFT_WINDOW {
            return false;
        }
        let newest = self
            .recent
            .get((self.recent_at + DRIFT_WINDOW) % (DRIFT_WINDOW + 1))
            .copied()
            .unwrap_or_default();
        let oldest = self.recent.get(self.recent_at).copied().unwrap_or_default();
        let ticks = newest.1.saturating_sub(oldest.1).max(1) as f64;
        let deviation = (newest.0 - oldest.0) / ticks - self.period;
        let floor = DRIFT_FLOOR * self.period;
        let by_intervals = DRIFT_SIGMAS * (self.interval_sq / DRIFT_WINDOW as f64).sqrt();
        let by_history = DRIFT_HISTORY_SIGMAS * self.window_sq.sqrt();
        let drift = self.memory > DRIFT_WINDOW as u32
            && (deviation.abs() > floor.max(by_intervals)
                || deviation.abs() > floor.max(by_history));
        if !drift {
            self.drift_run = 0;
            self.window_count = (self.window_count + 1).min(400);
            self.window_sq +=
                (deviation * deviation - self.window_sq) / f64::from(self.window_count);
            return false;
        }
        self.drift_run += 1;
        if self.drift_run < DRIFT_CONFIRM {
            return false;
        }
        self.drift_run = 0;
        true
    }

    fn advance_position(&mut self, steps: i64) {
        if self.armed {
            // The first tick after Start or Continue is the position itself.
            self.armed = false;
            self.running = true;
            self.tick_index = self.next_index;
            self.next_index += 1;
        } else if self.running {
            self.tick_index = self.next_index + steps - 1;
            self.next_index = self.tick_index + 1;
        }
    }

    /// Whether the position waits for each tick (the default: ticks arrive no later than
    /// the period they fall in) or runs on the loop's prediction (ticks that arrive after
    /// the fact, like an ALSA sequencer's: waiting for them would make every launch late).
    pub fn set_gated(&mut self, gated: bool) {
        self.gated = gated;
    }

    /// Checks for silence at absolute frame `now`; call once per period.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn update(&mut self, now: u64) -> Option<ClockEvent> {
        let last = self.last_tick?;
        let silent = now.saturating_sub(last) as f64;
        let limit = LOST_AFTER_BEATS * f64::from(PPQN) * self.period.max(1.0);
        if self.period > 0.0
            && silent > limit
            && matches!(self.state, LockState::Locked | LockState::Acquiring)
        {
            self.state = LockState::FreeRunning;
            // A stopped clock that goes quiet has simply stopped; a running one was lost.
            return self.running.then(|| ClockEvent::Lost {
                tempo: self.bpm(self.period),
            });
        }
        None
    }

    /// The song position in beats at absolute frame `frame`, or `None` before the first
    /// tick after a Start or Continue. Between ticks the position moves at the estimated
    /// tempo but stops just short of the next tick until it arrives (unless free-running).
    pub fn beats_at(&self, frame: u64) -> Option<f64> {
        let last = self.last_tick?;
        if self.tick_index < 0 && !self.running {
            return None;
        }
        let ppqn = f64::from(PPQN);
        let at_tick = self.tick_index as f64 / ppqn;
        if !self.running || self.period <= 0.0 {
            return Some(at_tick);
        }
        if !self.gated && self.memory >= 2 {
            // From the loop's phase, which the ticks' own jitter does not move.
            let filtered = self.origin as f64 + self.filtered;
            return Some(at_tick + (frame as f64 - filtered) / (self.period * ppqn));
        }
        let since = frame as f64 - last as f64;
        let beats = at_tick + since / (self.period * ppqn);
        if self.state == LockState::FreeRunning {
            return Some(beats);
        }
        Some(beats.min(self.next_index as f64 / ppqn - GATE))
    }
}

/// Sends MIDI clock for djinn's own transport: 24 ticks per beat at exact frame positions,
/// plus start, stop, continue and song position pointer.
///
/// Tick times are kept as absolute frame positions, so a period skipped by an xrun leaves
/// the grid where it was.
#[derive(Debug, Clone)]
pub struct ClockSender {
    /// Beat position of the next tick, in ticks.
    next_tick: i64,
    rolling: bool,
    /// A transport message waiting to go out at the start of the next period.
    pending: [Option<ClockMessage>; 2],
}

impl Default for ClockSender {
    fn default() -> Self {
        Self::new()
    }
}

impl ClockSender {
    pub fn new() -> Self {
        Self {
            next_tick: 0,
            rolling: false,
            pending: [None, None],
        }
    }

    /// Plans one period: the transport is at `beats` at the period's first frame and moves
    /// `beats_per_frame` per frame for `frames` frames; `rolling` says whether it plays.
    /// `emit(offset, message)` is called for every message of the period, in order.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn period(
        &mut self,
        beats: f64,
        beats_per_frame: f64,
        frames: usize,
        rolling: bool,
        mut emit: impl FnMut(usize, ClockMessage),
    ) {
        let ppqn = f64::from(PPQN);
        if rolling != self.rolling {
            self.rolling = rolling;
            // The first tick after a start is the one at (or just after) the playhead.
            self.next_tick = (beats * ppqn - 1e-6).ceil() as i64;
            if rolling {
                if self.next_tick <= 0 {
                    self.next_tick = 0;
                    self.pending = [Some(ClockMessage::Start), None];
                } else {
                    let per_sixteenth = i64::from(PPQN / 4);
                    let sixteenths =
                        ((self.next_tick + per_sixteenth - 1) / per_sixteenth).min(0x3FFF);
                    self.next_tick = sixteenths * per_sixteenth;
                    self.pending = [
                        Some(ClockMessage::SongPosition(sixteenths as u16)),
                        Some(ClockMessage::Continue),
                    ];
                }
            } else {
                self.pending = [Some(ClockMessage::Stop), None];
            }
        }
        for message in self.pending.iter_mut().filter_map(Option::take) {
            emit(0, message);
        }
        if !rolling || beats_per_frame <= 0.0 {
            return;
        }
        loop {
            // Each tick goes out on the first frame at or after its beat, the frame a layer
            // launched on that beat starts on; one that falls after this period's last frame
            // waits for the next period.
            let tick_beat = self.next_tick as f64 / ppqn;
            let at = ((tick_beat - ON_BEAT - beats) / beats_per_frame).ceil();
            if at >= frames as f64 {
                break;
            }
            emit(at.max(0.0) as usize, ClockMessage::Tick);
            self.next_tick += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: u32 = 48_000;

    fn period_of(bpm: f64) -> f64 {
        60.0 * f64::from(SR) / (f64::from(PPQN) * bpm)
    }

    /// A tick stream: ticks at `bpm`, each moved by up to `jitter` of a tick period
    /// (uniform, from a fixed linear congruential sequence), rounded to frames.
    fn ticks(bpm: f64, count: usize, jitter: f64, seed: u64) -> Vec<u64> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let period = period_of(bpm);
        (0..count)
            .map(|k| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                (10_000.0 + k as f64 * period + unit * jitter * period).round() as u64
            })
            .collect()
    }

    fn follow(stream: &[u64]) -> (ClockFollower, Vec<f64>) {
        let mut follower = ClockFollower::new(SR);
        follower.feed(stream[0].saturating_sub(256), ClockMessage::Start);
        let mut tempi = Vec::new();
        for &t in stream {
            follower.feed(t, ClockMessage::Tick);
            tempi.push(follower.tempo().unwrap_or(0.0));
        }
        (follower, tempi)
    }

    #[test]
    fn a_clean_clock_is_locked_within_one_beat() {
        for bpm in [90.0, 123.4, 128.0, 174.0] {
            let (follower, tempi) = follow(&ticks(bpm, 25, 0.0, 1));
            assert!(
                (tempi[24] - bpm).abs() < 0.1,
                "{bpm}: {} after one beat",
                tempi[24]
            );
            assert_eq!(follower.state(), LockState::Locked, "{bpm}");
        }
    }

    #[test]
    fn ten_percent_jitter_locks_within_four_beats_and_stays_within_a_tenth() {
        for (seed, bpm) in [(1, 90.0), (2, 123.4), (3, 128.0), (4, 174.0)] {
            let (follower, tempi) = follow(&ticks(bpm, 24 * 64, 0.1, seed));
            let locked = (0..tempi.len())
                .find(|&i| tempi[i..].iter().all(|t| (t - bpm).abs() <= 0.1))
                .unwrap();
            assert!(
                locked <= 4 * 24,
                "{bpm}: within ±0.1 BPM from tick {locked}"
            );
            let steady = &tempi[16 * 24..];
            let spread = spread(steady);
            assert!(spread <= 0.1, "{bpm}: steady-state spread {spread}");
            assert_eq!(follower.state(), LockState::Locked);
        }
    }

    #[test]
    fn intervals_jittered_one_by_one_keep_a_steady_tempo() {
        // Each interval moved by up to 10 % on its own, as `jack_midi_clock -J 10` does:
        // the phase wanders, and a mean of n intervals varies as 1/√n. The loop must not
        // take that wander for tempo changes.
        let period = period_of(123.4);
        let mut state = 99u64;
        let mut t = 10_000.0;
        let stream: Vec<u64> = (0..24 * 96)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                let at = t;
                t += period * (1.0 + 0.1 * unit);
                at.round() as u64
            })
            .collect();
        let (_, tempi) = follow(&stream);
        let steady = &tempi[32 * 24..];
        let spread = spread(steady);
        assert!(spread < 1.0, "spread {spread} BPM");
        let mean = steady.iter().sum::<f64>() / steady.len() as f64;
        assert!((mean - 123.4).abs() < 0.5, "mean {mean}");
    }

    #[test]
    fn the_position_lands_on_each_tick_and_never_runs_ahead_of_it() {
        let stream = ticks(128.0, 24 * 8, 0.1, 7);
        let mut follower = ClockFollower::new(SR);
        follower.feed(stream[0] - 256, ClockMessage::Start);
        assert_eq!(
            follower.beats_at(stream[0] - 100),
            None,
            "armed, not rolling"
        );
        for (k, &t) in stream.iter().enumerate() {
            // Just before the tick arrives the position is short of it.
            if k > 0 {
                let before = follower.beats_at(t - 1).unwrap();
                assert!(before < k as f64 / 24.0, "tick {k}: {before} before it");
            }
            follower.feed(t, ClockMessage::Tick);
            let at = follower.beats_at(t).unwrap();
            assert!((at - k as f64 / 24.0).abs() < 1e-12, "tick {k}: {at}");
        }
    }

    #[test]
    fn dropped_ticks_are_counted_and_do_not_disturb_the_tempo() {
        let mut stream = ticks(120.0, 24 * 16, 0.0, 1);
        // Lose ticks 200, 201 and 300.
        let lost = [200usize, 201, 300];
        let kept: Vec<(usize, u64)> = stream
            .drain(..)
            .enumerate()
            .filter(|(k, _)| !lost.contains(k))
            .collect();
        let mut follower = ClockFollower::new(SR);
        follower.feed(kept[0].1 - 10, ClockMessage::Start);
        for &(k, t) in &kept {
            follower.feed(t, ClockMessage::Tick);
            let beats = follower.beats_at(t).unwrap();
            assert!(
                (beats - k as f64 / 24.0).abs() < 1e-9,
                "tick {k} at {beats}"
            );
        }
        assert!((follower.tempo().unwrap() - 120.0).abs() < 0.01);
    }

    #[test]
    fn a_tick_a_period_late_does_not_move_the_tempo() {
        // A source that misses a cycle (jack_midi_clock on a busy host) sends the tick due in
        // it at the start of the next: a period late, once in a while. That is not a tempo
        // change.
        for bpm in [90.0, 127.3, 174.0] {
            let mut stream = ticks(bpm, 24 * 48, 0.0, 1);
            for k in [24 * 16 + 5, 24 * 30 + 11, 24 * 31, 24 * 40] {
                stream[k] += 256;
            }
            let (follower, tempi) = follow(&stream);
            let worst = tempi[24 * 8..]
                .iter()
                .map(|t| (t - bpm).abs())
                .fold(0.0, f64::max);
            assert!(worst < 0.1, "{bpm}: the tempo strays by {worst} BPM");
            assert_eq!(follower.state(), LockState::Locked, "{bpm}");
        }
    }

    /// Highest minus lowest.
    fn spread(values: &[f64]) -> f64 {
        values.iter().cloned().fold(f64::MIN, f64::max)
            - values.iter().cloned().fold(f64::MAX, f64::min)
    }

    /// Ticks after tick `from` until the tempo stays within ±0.1 BPM of `bpm`.
    fn settled_after(stream: &[u64], from: usize, bpm: f64) -> usize {
        let (_, tempi) = follow(stream);
        let settled = (from..tempi.len())
            .find(|&i| tempi[i..].iter().all(|t| (t - bpm).abs() <= 0.1))
            .expect("the tempo settles");
        settled - from
    }

    #[test]
    fn tempo_steps_and_ramps_are_followed() {
        // 120 BPM for 16 beats, then a jump to 130.
        let mut stream = ticks(120.0, 24 * 16, 0.0, 1);
        let from = *stream.last().unwrap() as f64;
        let p = period_of(130.0);
        stream.extend((1..=24 * 16).map(|k| (from + k as f64 * p).round() as u64));
        let settled = settled_after(&stream, 24 * 16, 130.0);
        assert!(
            settled <= 8 * 24,
            "settled {} beats after the step",
            settled / 24
        );

        // The same step under 10 % jitter.
        let mut stream = ticks(120.0, 24 * 16, 0.1, 5);
        let from = 10_000.0 + 24.0 * 16.0 * period_of(120.0);
        let jittered = ticks(130.0, 24 * 24, 0.1, 6);
        stream.extend(jittered.iter().map(|t| t - 10_000 + from as u64));
        let settled = settled_after(&stream, 24 * 16, 130.0);
        assert!(
            settled <= 8 * 24,
            "jittered: settled {} beats after the step",
            settled / 24
        );

        // A ramp from 120 to 140 BPM over 16 beats, then 8 beats at 140.
        let mut t = 10_000.0f64;
        let mut stream = Vec::new();
        for k in 0..24 * 32 {
            let beat = k as f64 / 24.0;
            let bpm = 120.0 + 20.0 * ((beat - 8.0) / 16.0).clamp(0.0, 1.0);
            stream.push(t.round() as u64);
            t += period_of(bpm);
        }
        let (_, tempi) = follow(&stream);
        for (beat, tempo) in tempi.iter().enumerate().skip(8 * 24).step_by(24) {
            let beat = beat as f64 / 24.0;
            let want = 120.0 + 20.0 * ((beat - 8.0) / 16.0).clamp(0.0, 1.0);
            // A second-order loop lags a ramp a little; the drift detector keeps it close.
            assert!(
                (tempo - want).abs() < 3.0,
                "beat {beat}: {tempo} for {want}"
            );
        }
        assert!((tempi.last().unwrap() - 140.0).abs() < 0.1);
    }

    #[test]
    fn silence_free_runs_at_the_last_tempo_and_ticks_bring_it_back() {
        let stream = ticks(128.0, 24 * 4, 0.0, 1);
        let (mut follower, _) = follow(&stream);
        let last = *stream.last().unwrap();
        let period = period_of(128.0);
        assert_eq!(follower.update(last + (40.0 * period) as u64), None);
        match follower.update(last + (49.0 * period) as u64) {
            Some(ClockEvent::Lost { tempo }) => assert!((tempo - 128.0).abs() < 0.01),
            other => panic!("{other:?}"),
        }
        assert_eq!(follower.state(), LockState::FreeRunning);
        // Free-running, the position keeps moving at 128 BPM.
        let later = last + (96.0 * period) as u64;
        let beats = follower.beats_at(later).unwrap();
        assert!((beats - (95.0 + 96.0) / 24.0).abs() < 0.01, "{beats}");
        // The clock comes back on the grid: the count carries on.
        let back = last + (120.0 * period).round() as u64;
        follower.feed(back, ClockMessage::Tick);
        assert_eq!(follower.beats_at(back).unwrap(), (95.0 + 120.0) / 24.0);
        assert_eq!(follower.state(), LockState::Acquiring);
    }

    #[test]
    fn start_stop_continue_and_song_position() {
        let mut f = ClockFollower::new(SR);
        let p = period_of(120.0) as u64;
        assert_eq!(f.feed(0, ClockMessage::Start), Some(ClockEvent::Started));
        for k in 0..48 {
            f.feed(100 + k * p, ClockMessage::Tick);
        }
        assert!(f.running());
        assert_eq!(f.beats_at(100 + 47 * p), Some(47.0 / 24.0));
        let stop = 100 + 47 * p + 10;
        assert_eq!(
            f.feed(stop, ClockMessage::Stop),
            Some(ClockEvent::Stopped { beats: 2.0 })
        );
        // Ticks while stopped keep the tempo fresh but not the position.
        for k in 48..72 {
            f.feed(100 + k * p, ClockMessage::Tick);
        }
        assert_eq!(f.beats_at(100 + 80 * p), Some(47.0 / 24.0));
        // Continue from bar 3 (beat 8 = sixteenth 32).
        f.feed(100 + 72 * p, ClockMessage::SongPosition(32));
        f.feed(100 + 72 * p + 5, ClockMessage::Continue);
        f.feed(100 + 73 * p, ClockMessage::Tick);
        assert_eq!(f.beats_at(100 + 73 * p), Some(8.0));
        f.feed(100 + 74 * p, ClockMessage::Tick);
        assert_eq!(f.beats_at(100 + 74 * p), Some(8.0 + 1.0 / 24.0));
    }

    #[test]
    fn messages_round_trip_through_bytes() {
        for message in [
            ClockMessage::Tick,
            ClockMessage::Start,
            ClockMessage::Continue,
            ClockMessage::Stop,
            ClockMessage::SongPosition(0),
            ClockMessage::SongPosition(1234),
            ClockMessage::SongPosition(0x3FFF),
        ] {
            let (bytes, len) = message.encode();
            assert_eq!(ClockMessage::parse(&bytes[..len]), Some(message));
        }
        assert_eq!(ClockMessage::parse(&[0x90, 60, 100]), None);
        assert_eq!(ClockMessage::parse(&[]), None);
    }

    #[test]
    fn the_sender_ticks_on_exact_frames_and_says_start_and_stop() {
        // Tempi whose ticks fall on every fraction of a frame, some in the last frame of a
        // period, at several period sizes: each tick is on the first frame at or after it.
        for (bpm, frames) in [(123.4, 256), (97.3, 64), (171.1, 128), (88.8, 1024)] {
            let per_frame = bpm / (60.0 * f64::from(SR));
            let mut sender = ClockSender::new();
            let mut beats = 0.0;
            let mut frame = 0u64;
            let mut events = Vec::new();
            let periods = 4_000_000 / frames;
            for period in 0..periods {
                let rolling = period < periods * 3 / 4;
                sender.period(beats, per_frame, frames, rolling, |offset, m| {
                    assert!(offset < frames, "offset {offset} in a period of {frames}");
                    events.push((frame + offset as u64, m))
                });
                if rolling {
                    beats += per_frame * frames as f64;
                }
                frame += frames as u64;
            }
            assert_eq!(events.first().unwrap().1, ClockMessage::Start);
            assert_eq!(events.last().unwrap().1, ClockMessage::Stop);
            let ticks: Vec<u64> = events
                .iter()
                .filter(|(_, m)| *m == ClockMessage::Tick)
                .map(|(f, _)| *f)
                .collect();
            assert!(ticks.len() > 2000, "{} ticks at {bpm} BPM", ticks.len());
            let exact = period_of(bpm);
            for (k, t) in ticks.iter().enumerate() {
                let late = *t as f64 - k as f64 * exact;
                assert!(
                    (-1e-6..1.0).contains(&late),
                    "{bpm} BPM, {frames}-frame periods: tick {k} at {t}, exact {}",
                    k as f64 * exact
                );
            }
            let gaps: Vec<u64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
            let spread = gaps.iter().max().unwrap() - gaps.iter().min().unwrap();
            assert!(spread <= 1, "tick spacing varies by {spread} frames");
        }
    }

    #[test]
    fn the_sender_continues_from_a_song_position() {
        let mut sender = ClockSender::new();
        let mut out = Vec::new();
        // The transport starts at beat 9.1: the song position is the sixteenth at or after.
        sender.period(9.1, 120.0 / 2_880_000.0, 256, true, |o, m| out.push((o, m)));
        assert_eq!(out[0], (0, ClockMessage::SongPosition(37)));
        assert_eq!(out[1], (0, ClockMessage::Continue));
    }

    #[test]
    fn a_follower_locks_to_the_sender() {
        let bpm = 174.0;
        let per_frame = bpm / (60.0 * f64::from(SR));
        let mut sender = ClockSender::new();
        let mut follower = ClockFollower::new(SR);
        let mut beats = 0.0;
        for period in 0..400u64 {
            let frame = period * 256;
            sender.period(beats, per_frame, 256, true, |offset, m| {
                follower.feed(frame + offset as u64, m);
            });
            beats += per_frame * 256.0;
        }
        assert_eq!(follower.state(), LockState::Locked);
        assert!((follower.tempo().unwrap() - bpm).abs() < 0.01);
        let at = follower.beats_at(400 * 256).unwrap();
        assert!((at - beats).abs() < 1.0 / 24.0, "{at} vs {beats}");
    }
}
