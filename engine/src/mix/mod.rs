//! The realtime mixer: a [`Processor`] owned by the audio callback and a [`MixerHandle`]
//! owned by the audio actor, talking over two `rtrb` queues sized at construction.
//!
//! The processor plays up to [`MAX_LAYERS`] layers (stereo loops or one-shots) with gain,
//! pan, mute, solo, a state-variable filter and sends to a master reverb and a tempo-synced
//! delay. Layers sum into four output groups (drums, bass, music, voice) that a DAW can
//! record apart; the master bus adds the effect returns and runs shelving EQ, a compressor
//! and a true-peak-safe limiter. Launches, replaces and stops land on the transport's grid
//! (now, next beat, next bar, next N-bar phrase) to the sample.
//!
//! Every buffer that enters the processor leaves it again inside a [`Notification`], to be
//! dropped by the actor: `process` never allocates or frees.

mod bank;
mod layer;
mod master;
pub mod pipe;
mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtrb::{Consumer, Producer, RingBuffer};
use serde::{Deserialize, Serialize};

use crate::chain::{Chain, ChainSettings};
use crate::dsp::{FilterMode, Smoother, all_finite, larger};
use crate::music::Meter;
use crate::transport::{ON_BEAT, Transport};

use bank::Bank;
use layer::Layer;
use master::MasterBus;
pub use master::MasterFx;
pub use sync::{
    CLOCK_FEED, CLOCK_MESSAGES, ClockReport, ClockSource, ExternalPosition, StampedClock,
    clock_feed,
};

/// Layer slots in one processor.
pub const MAX_LAYERS: usize = 32;
/// Output groups besides the master.
pub const GROUPS: usize = 4;
/// Stereo outputs metered: master then the groups.
pub const OUTPUTS: usize = 1 + GROUPS;
/// Queue sizes.
pub const COMMAND_CAPACITY: usize = 1024;
pub const NOTIFICATION_CAPACITY: usize = 4096;
/// Buffers waiting to leave when the notification queue is full.
const RETIRE_BACKLOG: usize = 64;

/// A layer's identity, chosen by the actor.
pub type LayerId = u64;

/// The output group a layer sums into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Drums,
    Bass,
    Music,
    Voice,
}

impl Group {
    pub const ALL: [Group; GROUPS] = [Group::Drums, Group::Bass, Group::Music, Group::Voice];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The group a part of `role` plays in: drums and bass apart, everything else music.
    pub fn for_role(role: crate::synth::Role) -> Group {
        match role {
            crate::synth::Role::Drum => Group::Drums,
            crate::synth::Role::Bass => Group::Bass,
            _ => Group::Music,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Group::Drums => "drums",
            Group::Bass => "bass",
            Group::Music => "music",
            Group::Voice => "voice",
        }
    }
}

/// Where on the grid a launch, replace or stop lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// At the start of the next period.
    Now,
    /// At the next beat.
    Beat,
    /// At the next bar line.
    Bar,
    /// At the next bar line that starts a phrase of this many bars.
    Phrase(u32),
    /// On this bar line (bars counted from 0 at the transport's start). A launch or
    /// replace that reaches the processor after that bar has begun is refused as
    /// [`Refusal::Late`] rather than played off the grid; a late remove happens now.
    AtBar(u64),
}

/// Audio for one layer: stereo frames at the processor's rate.
///
/// The frames are shared so the audio actor can keep a reference to relaunch a layer after
/// the JACK server comes back; the processor still hands every `LayerAudio` back to be
/// dropped outside the callback, so the callback never frees the last reference.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAudio {
    pub frames: Arc<[[f32; 2]]>,
    /// Loops forever when true; plays once and ends when false.
    pub looped: bool,
}

/// Per-layer mix settings; changes glide.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerParams {
    /// Linear gain, 0–4.
    pub gain: f32,
    /// -1 (left) to 1 (right), equal-power.
    pub pan: f32,
    pub mute: bool,
    pub solo: bool,
    pub filter: FilterSettings,
    /// Send levels to the master reverb and delay, 0–1.
    pub reverb_send: f32,
    pub delay_send: f32,
}

impl Default for LayerParams {
    fn default() -> Self {
        Self {
            gain: 1.0,
            pan: 0.0,
            mute: false,
            solo: false,
            filter: FilterSettings::default(),
            reverb_send: 0.0,
            delay_send: 0.0,
        }
    }
}

/// A layer's filter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterSettings {
    #[serde(with = "filter_mode")]
    pub mode: FilterMode,
    pub cutoff_hz: f32,
    /// 0–1.
    pub resonance: f32,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            mode: FilterMode::Off,
            cutoff_hz: 1000.0,
            resonance: 0.2,
        }
    }
}

mod filter_mode {
    use super::FilterMode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &FilterMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match mode {
            FilterMode::Off => "off",
            FilterMode::LowPass => "lowpass",
            FilterMode::HighPass => "highpass",
            FilterMode::BandPass => "bandpass",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FilterMode, D::Error> {
        match String::deserialize(d)?.as_str() {
            "off" => Ok(FilterMode::Off),
            "lowpass" => Ok(FilterMode::LowPass),
            "highpass" => Ok(FilterMode::HighPass),
            "bandpass" => Ok(FilterMode::BandPass),
            other => Err(serde::de::Error::custom(format!(
                "unknown filter {other:?}: expected off, lowpass, highpass or bandpass"
            ))),
        }
    }
}

/// What the actor asks of the processor.
#[derive(Debug)]
pub enum Command {
    /// Starts a layer in a free slot.
    Launch {
        id: LayerId,
        audio: Box<LayerAudio>,
        group: Group,
        params: LayerParams,
        at: Quantize,
    },
    /// Swaps a layer's audio with an equal-power crossfade of `crossfade_beats`.
    Replace {
        id: LayerId,
        audio: Box<LayerAudio>,
        at: Quantize,
        crossfade_beats: f32,
    },
    /// Stops a layer (with a short fade so it does not click).
    Remove {
        id: LayerId,
        at: Quantize,
    },
    /// New mix settings for a layer.
    Set {
        id: LayerId,
        params: LayerParams,
    },
    /// New master effect settings.
    SetFx(MasterFx),
    SetTempo(f64),
    /// Glides the tempo to `tempo` over `beats` beats.
    RampTempo {
        tempo: f64,
        beats: f64,
    },
    SetMeter(Meter),
    /// Where the transport takes its tempo and position from.
    SetClockSource(ClockSource),
    /// Whether djinn sends MIDI clock on its clock output.
    SetMasterClock(bool),
    /// Starts or stops the transport; layers pause while it is stopped.
    SetRolling(bool),
    /// The live effect chain on the inputs: its settings (glided) and whether the processed
    /// inputs are heard (faded in and out).
    SetLiveChain {
        settings: ChainSettings,
        on: bool,
    },
    /// Whether the inputs go through the pipe (its worker runs the external command).
    SetPipe(bool),
}

/// What the processor tells the actor.
#[derive(Debug)]
pub enum Notification {
    /// A layer's first frame played at `frame` (transport frame), `beat` beats into the
    /// transport.
    Started { id: LayerId, frame: u64, beat: f64 },
    /// A layer's last frame played at `frame`.
    Ended { id: LayerId, frame: u64 },
    /// A layer's audio swapped in by a replace started at `frame`.
    Replaced { id: LayerId, frame: u64 },
    /// A buffer the processor is done with: drop it off the realtime thread.
    Retired(Box<LayerAudio>),
    /// A launch that found no free slot or came too late for its bar, or a replace for a
    /// layer that is gone or too late.
    Refused {
        id: LayerId,
        audio: Box<LayerAudio>,
        reason: Refusal,
    },
    /// Where the transport is, sent every few periods.
    Position {
        frame: u64,
        beats: f64,
        tempo: f64,
        rolling: bool,
        clock: ClockReport,
    },
    /// The external clock locked, was lost, started, continued or stopped.
    Clock(crate::clock::ClockEvent),
    /// Peak and RMS per output (master, drums, bass, music, voice), left and right, over
    /// the last tenth of a second.
    Meter {
        peak: [[f32; 2]; OUTPUTS],
        rms: [[f32; 2]; OUTPUTS],
    },
    /// A stage's output went non-finite (NaN or infinite) in the block from transport
    /// frame `frame`: that block of the stage played silence and its state was reset, so
    /// the next block is clean. `layer` names a layer found at fault (its state reset, or
    /// its audio holding such a sample); one notification per layer found.
    NonFinite {
        stage: Stage,
        layer: Option<LayerId>,
        frame: u64,
    },
}

/// A stage of the mixer that recovers on its own when its output goes non-finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The layers, summed into the groups and the effect sends.
    Layers,
    /// The inputs through the pipe and the live effect chain.
    Live,
    /// The master bus: effect returns, EQ, compressor, limiter.
    Master,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Layers, Stage::Live, Stage::Master];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Layers => "layers",
            Stage::Live => "live",
            Stage::Master => "master",
        }
    }
}

/// Why a layer command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoFreeSlot,
    UnknownLayer,
    /// The bar it was due on had already begun when the command arrived.
    Late,
}

/// Counters shared between the processor and its handle.
#[derive(Debug, Default)]
pub struct MixerStats {
    /// Commands the handle could not queue (full queue).
    pub commands_dropped: AtomicU64,
    /// Notifications the processor could not queue.
    pub notifications_dropped: AtomicU64,
    /// Buffers leaked because both the queue and the backlog were full.
    pub buffers_leaked: AtomicU64,
    /// Periods processed.
    pub periods: AtomicU64,
    /// MIDI clock messages that found the period's list full, in or out.
    pub clock_messages_dropped: AtomicU64,
    /// Frames the driver's clock moved on by with no period processed: cycles missed (an
    /// xrun, whether or not the server reported one), caught up in silence.
    pub frames_skipped: AtomicU64,
}

/// The buffers of one period: master and group outputs, left and right, and the inputs
/// the live effect chain plays through (empty slices when the driver has none).
pub struct Outputs<'a> {
    pub master: [&'a mut [f32]; 2],
    pub groups: [[&'a mut [f32]; 2]; GROUPS],
    pub input: [&'a [f32]; 2],
}

/// Owned output buffers for drivers that are not JACK (the offline driver, tests,
/// benchmarks): master and groups, left and right, one period long.
pub struct OutputBuffers {
    pub master: [Vec<f32>; 2],
    pub groups: [[Vec<f32>; 2]; GROUPS],
}

impl OutputBuffers {
    /// Silent buffers of `frames` frames.
    pub fn new(frames: usize) -> Self {
        Self {
            master: [vec![0.0; frames], vec![0.0; frames]],
            groups: std::array::from_fn(|_| [vec![0.0; frames], vec![0.0; frames]]),
        }
    }

    /// The buffers as the processor writes them.
    pub fn outputs(&mut self) -> Outputs<'_> {
        fn pair(buffers: &mut [Vec<f32>; 2]) -> [&mut [f32]; 2] {
            let [l, r] = buffers;
            [l.as_mut_slice(), r.as_mut_slice()]
        }
        let [g0, g1, g2, g3] = &mut self.groups;
        Outputs {
            master: pair(&mut self.master),
            groups: [pair(g0), pair(g1), pair(g2), pair(g3)],
            input: [&[], &[]],
        }
    }
}

/// The actor's side: sends commands, receives notifications.
pub struct MixerHandle {
    commands: Producer<Command>,
    notifications: Consumer<Notification>,
    stats: Arc<MixerStats>,
    pipe: Option<pipe::PipeEnds>,
}

impl MixerHandle {
    /// The worker's ends of the pipe, once (the pipe worker takes them).
    pub fn take_pipe(&mut self) -> Option<pipe::PipeEnds> {
        self.pipe.take()
    }

    /// Queues a command; when the queue is full it is counted and given back.
    pub fn send(&mut self, command: Command) -> Result<(), Command> {
        self.commands
            .push(command)
            .map_err(|rtrb::PushError::Full(command)| {
                self.stats.commands_dropped.fetch_add(1, Ordering::Relaxed);
                command
            })
    }

    /// The next notification, if any.
    pub fn poll(&mut self) -> Option<Notification> {
        self.notifications.pop().ok()
    }

    pub fn stats(&self) -> &Arc<MixerStats> {
        &self.stats
    }
}

/// The realtime mixer. Owned by the audio callback.
pub struct Processor {
    sample_rate: f32,
    max_block: usize,
    transport: Transport,
    layers: [Layer; MAX_LAYERS],
    /// The layers that play the current block steadily, run side by side.
    bank: Bank,
    /// How the layers run: tests check the bank against frame-by-frame rendering.
    #[cfg(test)]
    layer_path: tests::LayerPath,
    master: MasterBus,
    /// Scratch for the group sums and the effect sends, one period long.
    group_buf: [[Vec<f32>; 2]; GROUPS],
    send_buf: [[Vec<f32>; 2]; 2],
    commands: Consumer<Command>,
    notifications: Producer<Notification>,
    backlog: [Option<Box<LayerAudio>>; RETIRE_BACKLOG],
    stats: Arc<MixerStats>,
    meter: MeterAccumulator,
    frames_since_position: usize,
    sync: sync::Sync,
    live: LiveChain,
    pipe: pipe::PipeTap,
    pipe_on: bool,
}

/// The inputs through the processing chain, into the master bus.
struct LiveChain {
    chain: Chain,
    /// 1 while on; fades to 0 when turned off.
    level: Smoother,
    /// The processed inputs of the current span.
    buf: Vec<[f32; 2]>,
}

/// Peak and RMS accumulation between meter notifications.
struct MeterAccumulator {
    peak: [[f32; 2]; OUTPUTS],
    sum_sq: [[f64; 2]; OUTPUTS],
    frames: usize,
    every: usize,
}

impl Processor {
    /// A processor at `sample_rate` for periods of up to `max_block` frames, and its handle.
    pub fn new(
        sample_rate: u32,
        max_block: usize,
        transport: Transport,
    ) -> (Processor, MixerHandle) {
        let sr = sample_rate as f32;
        let (cmd_tx, cmd_rx) = RingBuffer::new(COMMAND_CAPACITY);
        let (note_tx, note_rx) = RingBuffer::new(NOTIFICATION_CAPACITY);
        let stats = Arc::new(MixerStats::default());
        let (tap, pipe_ends) = pipe::PipeTap::new(pipe::PIPE_BLOCK);
        let mut transport = transport;
        transport.sample_rate = sample_rate;
        let processor = Processor {
            sample_rate: sr,
            max_block,
            transport,
            layers: std::array::from_fn(|_| Layer::new(sr)),
            bank: Bank::new(max_block),
            #[cfg(test)]
            layer_path: tests::LayerPath::Fastest,
            master: MasterBus::new(sr, max_block),
            group_buf: std::array::from_fn(|_| [vec![0.0; max_block], vec![0.0; max_block]]),
            send_buf: std::array::from_fn(|_| [vec![0.0; max_block], vec![0.0; max_block]]),
            commands: cmd_rx,
            notifications: note_tx,
            backlog: std::array::from_fn(|_| None),
            stats: stats.clone(),
            meter: MeterAccumulator {
                peak: [[0.0; 2]; OUTPUTS],
                sum_sq: [[0.0; 2]; OUTPUTS],
                frames: 0,
                every: (sample_rate / 10) as usize,
            },
            frames_since_position: 0,
            sync: sync::Sync::new(sample_rate),
            live: LiveChain {
                chain: Chain::live(&ChainSettings::default(), sample_rate),
                level: Smoother::new(0.0, 0.02, sr),
                buf: vec![[0.0; 2]; max_block],
            },
            pipe: tap,
            pipe_on: false,
        };
        let handle = MixerHandle {
            commands: cmd_tx,
            notifications: note_rx,
            stats,
            pipe: Some(pipe_ends),
        };
        (processor, handle)
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate as u32
    }

    pub fn max_block(&self) -> usize {
        self.max_block
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Frames of latency the master bus adds (the limiter's lookahead).
    pub fn latency(&self) -> usize {
        self.master.latency()
    }

    /// Renders one period into `out` on djinn's own frame count (drivers without a frame
    /// clock of their own: the offline driver, tests, benchmarks). Every slice must be the
    /// same length; periods longer than `max_block` are rendered in pieces.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn process(&mut self, out: &mut Outputs<'_>) {
        let frame_time = self.sync_frame_time();
        self.process_at(frame_time, out);
    }

    fn drain_commands(&mut self) {
        while let Ok(command) = self.commands.pop() {
            self.apply(command);
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Launch {
                id,
                audio,
                group,
                params,
                at,
            } => {
                if self.is_late(at) {
                    return self.notify(Notification::Refused {
                        id,
                        audio,
                        reason: Refusal::Late,
                    });
                }
                let target = self.target_beat(at);
                match self.layers.iter_mut().find(|l| l.is_free()) {
                    Some(layer) => layer.launch(id, audio, group, params, target),
                    None => self.notify(Notification::Refused {
                        id,
                        audio,
                        reason: Refusal::NoFreeSlot,
                    }),
                }
            }
            Command::Replace {
                id,
                audio,
                at,
                crossfade_beats,
            } => {
                if self.is_late(at) {
                    return self.notify(Notification::Refused {
                        id,
                        audio,
                        reason: Refusal::Late,
                    });
                }
                let target = self.target_beat(at);
                let frames =
                    (f64::from(crossfade_beats.max(0.0)) * self.frames_per_beat()) as usize;
                match self.layer_mut(id) {
                    Some(layer) => {
                        if let Some(old) = layer.replace(audio, target, frames.max(64)) {
                            self.retire(old);
                        }
                    }
                    None => self.notify(Notification::Refused {
                        id,
                        audio,
                        reason: Refusal::UnknownLayer,
                    }),
                }
            }
            Command::Remove { id, at } => {
                let target = self.target_beat(at);
                if let Some(layer) = self.layer_mut(id) {
                    layer.stop(target);
                }
            }
            Command::Set { id, params } => {
                if let Some(layer) = self.layer_mut(id) {
                    layer.set_params(params);
                }
            }
            Command::SetFx(fx) => self.master.set(fx),
            Command::SetTempo(tempo) => self.ramp_tempo(tempo, 0.0),
            Command::RampTempo { tempo, beats } => self.ramp_tempo(tempo, beats),
            Command::SetMeter(meter) => self.transport.meter = meter,
            Command::SetClockSource(source) => self.set_clock_source(source),
            Command::SetMasterClock(on) => self.sync.master = on,
            Command::SetRolling(rolling) => self.transport.rolling = rolling,
            Command::SetLiveChain { settings, on } => {
                self.live.chain.set(&settings);
                self.live.level.set(if on { 1.0 } else { 0.0 });
            }
            Command::SetPipe(on) => {
                if on && !self.pipe_on {
                    self.pipe.reset();
                }
                self.pipe_on = on;
            }
        }
    }

    fn layer_mut(&mut self, id: LayerId) -> Option<&mut Layer> {
        self.layers.iter_mut().find(|l| l.id() == Some(id))
    }

    fn frames_per_beat(&self) -> f64 {
        60.0 * f64::from(self.sample_rate) / self.transport.tempo
    }

    /// Whether `at` names a bar that has already begun.
    fn is_late(&self, at: Quantize) -> bool {
        match at {
            Quantize::AtBar(bar) => {
                let per_bar = f64::from(self.transport.meter.beats_per_bar);
                (bar as f64) * per_bar < self.transport.beats() - ON_BEAT
            }
            _ => false,
        }
    }

    /// The beat at which something quantized to `at` happens; `None` for now.
    fn target_beat(&self, at: Quantize) -> Option<f64> {
        let beats = self.transport.beats();
        let per_bar = f64::from(self.transport.meter.beats_per_bar);
        let unit = match at {
            Quantize::Now => return None,
            Quantize::AtBar(bar) => {
                let beat = (bar as f64) * per_bar;
                return (beat > beats - ON_BEAT).then_some(beat);
            }
            Quantize::Beat => 1.0,
            Quantize::Bar => per_bar,
            Quantize::Phrase(bars) => per_bar * f64::from(bars.max(1)),
        };
        // A hair of tolerance so a command arriving exactly on a boundary lands on it.
        Some(((beats - ON_BEAT) / unit).ceil() * unit)
    }

    /// The inputs of `offset..offset + n` through the pipe (when on) and the live chain
    /// (when on) into `live.buf`; silence (and no work) while both are off.
    fn render_live(&mut self, out: &Outputs<'_>, offset: usize, n: usize) {
        let live = &mut self.live;
        let n = n.min(live.buf.len());
        let chain_off = live.level.target() == 0.0 && live.level.is_settled();
        if chain_off && !self.pipe_on {
            live.buf[..n].iter_mut().for_each(|f| *f = [0.0; 2]);
            return;
        }
        let [in_l, in_r] = &out.input;
        for (i, slot) in live.buf[..n].iter_mut().enumerate() {
            let mut x = [
                in_l.get(offset + i).copied().unwrap_or(0.0),
                in_r.get(offset + i).copied().unwrap_or(0.0),
            ];
            if self.pipe_on {
                x = self.pipe.process(x);
            }
            // With the chain off, the pipe is heard as it comes back.
            let direct = if self.pipe_on { 1.0 } else { 0.0 };
            *slot = if chain_off {
                [x[0] * direct, x[1] * direct]
            } else {
                let y = live.chain.process(x);
                let level = live.level.next_value();
                let rest = (1.0 - level) * direct;
                [y[0] * level + x[0] * rest, y[1] * level + x[1] * rest]
            };
        }
    }

    fn render(&mut self, out: &mut Outputs<'_>, offset: usize, n: usize, ceiling: f64) {
        for pair in self.group_buf.iter_mut().chain(&mut self.send_buf) {
            for ch in pair.iter_mut() {
                ch.iter_mut().take(n).for_each(|s| *s = 0.0);
            }
        }
        let rolling = self.transport.rolling;
        let frame0 = self.transport.frame;
        let beats0 = self.transport.beats();
        let beats_per_frame = 1.0 / self.frames_per_beat();
        let any_solo = self.layers.iter().any(|l| l.is_soloed());
        if rolling {
            let block = layer::Block {
                frame0,
                beats0,
                beats_per_frame,
                ceiling,
                n,
                any_solo,
            };
            // Layers that play the block steadily run side by side; the others frame by
            // frame. Each adds into the sums in slot order, as they always have.
            #[cfg(not(test))]
            let (bank, straight) = (true, true);
            #[cfg(test)]
            let (bank, straight) = self.layer_path.allows();
            self.bank.clear(n);
            for (slot, layer) in self.layers.iter_mut().enumerate() {
                if let Some(steady) = layer.steady(&block)
                    && bank
                {
                    self.bank.join(slot, steady);
                }
            }
            if straight && self.run_steady(n) {
                return self.finish_render(out, offset, n);
            }
            let members = self.bank.members();
            let (frames, stride) = self.bank.lanes_mut();
            for (slot, lane) in members {
                if let Some(layer) = self.layers.get_mut(slot) {
                    layer.gather(n, frames, stride, lane);
                }
            }
            self.bank.run();
            for index in 0..MAX_LAYERS {
                let mut events = layer::Events::default();
                let [reverb_send, delay_send] = &mut self.send_buf;
                let Some(layer) = self.layers.get_mut(index) else {
                    continue;
                };
                if let Some(member) = self.bank.member(index) {
                    self.bank
                        .mix_into(member, &mut self.group_buf, reverb_send, delay_send);
                    layer.resume(self.bank.state(member));
                    continue;
                }
                layer.render(
                    block,
                    &mut self.group_buf,
                    reverb_send,
                    delay_send,
                    &mut events,
                );
                let mut retired: [Option<Box<LayerAudio>>; 3] = [None, None, None];
                for slot in &mut retired {
                    *slot = layer.take_retired();
                }
                for event in events.drain() {
                    let notification = match event {
                        layer::Event::Started(id, frame, beat) => {
                            Notification::Started { id, frame, beat }
                        }
                        layer::Event::Replaced(id, frame) => Notification::Replaced { id, frame },
                        layer::Event::Ended(id, frame) => Notification::Ended { id, frame },
                    };
                    self.notify(notification);
                }
                for audio in retired.into_iter().flatten() {
                    self.retire(audio);
                }
            }
        }
        self.finish_render(out, offset, n);
    }

    /// When every playing layer plays the block steadily, runs them straight from their
    /// frames into the sums ([`Bank::run_into`]) and moves them on; false when some layer
    /// does not, or the bank cannot.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    fn run_steady(&mut self, n: usize) -> bool {
        let bank = &self.bank;
        let all = (0..MAX_LAYERS).all(|slot| {
            bank.member(slot).is_some() || self.layers.get(slot).is_none_or(Layer::is_free)
        });
        if !all {
            return false;
        }
        let mut sources: [&[[f32; 2]]; MAX_LAYERS] = [&[]; MAX_LAYERS];
        let mut count = 0;
        for ((slot, _), source) in self.bank.members().zip(&mut sources) {
            if let Some(layer) = self.layers.get(slot) {
                *source = layer.block_source(n);
                count += 1;
            }
        }
        let ran = self
            .bank
            .run_into(&sources[..count], &mut self.group_buf, &mut self.send_buf);
        if ran {
            for (member, (slot, _)) in self.bank.members().enumerate() {
                if let Some(layer) = self.layers.get_mut(slot) {
                    layer.advance(n);
                    layer.resume(self.bank.state(member));
                }
            }
        }
        ran
    }

    /// The master bus, the group outputs, the meters and the transport after the layers
    /// have played `offset..offset + n`.
    fn finish_render(&mut self, out: &mut Outputs<'_>, offset: usize, n: usize) {
        let rolling = self.transport.rolling;
        self.guard_layers(n);
        self.render_live(out, offset, n);
        self.guard_live(n);
        let delay_frames = (f64::from(self.master.delay_beats()) * self.frames_per_beat()) as f32;
        self.master.render(
            master::BusInput {
                groups: &self.group_buf,
                sends: &self.send_buf,
                live: &self.live.buf[..n.min(self.live.buf.len())],
            },
            delay_frames,
            &mut out.master,
            offset,
            n,
        );
        self.guard_master(out, offset, n);
        for (group, outs) in self.group_buf.iter().zip(out.groups.iter_mut()) {
            for (src, dst) in group.iter().zip(outs.iter_mut()) {
                if let (Some(dst), Some(src)) = (dst.get_mut(offset..offset + n), src.get(..n)) {
                    dst.copy_from_slice(src);
                }
            }
        }
        self.meter_block(out, offset, n);
        if rolling {
            self.transport.advance(n as u64);
        }
        self.frames_since_position += n;
        if self.frames_since_position >= (self.sample_rate as usize) / 50 {
            self.frames_since_position = 0;
            self.notify(Notification::Position {
                frame: self.transport.frame,
                beats: self.transport.beats(),
                tempo: self.transport.tempo,
                rolling: self.transport.rolling,
                clock: self.sync.report(),
            });
        }
    }

    /// Silences each group sum and effect send whose first `n` samples are not all finite
    /// before the master bus and the group outputs take them, and resets the layers found
    /// at fault ([`Layer::recover`]). One check per buffer per block; the search for the
    /// layers only after a failed one.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    fn guard_layers(&mut self, n: usize) {
        let mut spoiled = false;
        for buf in self
            .group_buf
            .iter_mut()
            .chain(&mut self.send_buf)
            .flatten()
        {
            let Some(block) = buf.get_mut(..n) else {
                continue;
            };
            if !all_finite(block) {
                block.fill(0.0);
                spoiled = true;
            }
        }
        if !spoiled {
            return;
        }
        let frame = self.transport.frame;
        let mut found = false;
        for index in 0..MAX_LAYERS {
            let Some(layer) = self.layers.get_mut(index) else {
                continue;
            };
            if layer.recover(n) {
                found = true;
                let id = layer.id();
                self.notify(Notification::NonFinite {
                    stage: Stage::Layers,
                    layer: id,
                    frame,
                });
            }
        }
        if !found {
            // A layer that ended in this block takes its part with it.
            self.notify(Notification::NonFinite {
                stage: Stage::Layers,
                layer: None,
                frame,
            });
        }
    }

    /// Silences the live inputs' span and resets the live chain and the pipe when it is not
    /// all finite (a NaN on an input port, or from the pipe's command).
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    fn guard_live(&mut self, n: usize) {
        let Some(span) = self.live.buf.get_mut(..n) else {
            return;
        };
        if all_finite(span.as_flattened()) {
            return;
        }
        span.fill([0.0; 2]);
        self.live.chain.reset();
        self.live.level.heal(0.0);
        self.pipe.reset();
        let frame = self.transport.frame;
        self.notify(Notification::NonFinite {
            stage: Stage::Live,
            layer: None,
            frame,
        });
    }

    /// Silences the master's span and resets the master bus when the span is not all
    /// finite. Its inputs were checked before it ran, so the fault is its own state.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    fn guard_master(&mut self, out: &mut Outputs<'_>, offset: usize, n: usize) {
        let mut spoiled = false;
        for ch in out.master.iter_mut() {
            if let Some(span) = ch.get_mut(offset..offset + n)
                && !all_finite(span)
            {
                spoiled = true;
            }
        }
        if !spoiled {
            return;
        }
        for ch in out.master.iter_mut() {
            if let Some(span) = ch.get_mut(offset..offset + n) {
                span.fill(0.0);
            }
        }
        self.master.reset();
        let frame = self.transport.frame;
        self.notify(Notification::NonFinite {
            stage: Stage::Master,
            layer: None,
            frame,
        });
    }

    fn meter_block(&mut self, out: &Outputs<'_>, offset: usize, n: usize) {
        let m = &mut self.meter;
        let outputs = std::iter::once(&out.master).chain(out.groups.iter());
        for (index, pair) in outputs.enumerate() {
            for (ch, buf) in pair.iter().enumerate() {
                let Some(samples) = buf.get(offset..offset + n) else {
                    continue;
                };
                let (peak, sum) = peak_and_energy(samples);
                let peak_slot = m.peak.get_mut(index).and_then(|p| p.get_mut(ch));
                let sum_slot = m.sum_sq.get_mut(index).and_then(|q| q.get_mut(ch));
                if let (Some(p), Some(q)) = (peak_slot, sum_slot) {
                    *p = p.max(peak);
                    *q += sum;
                }
            }
        }
        m.frames += n;
        if m.frames >= m.every {
            let frames = m.frames as f64;
            let rms = m
                .sum_sq
                .map(|pair| pair.map(|s| (s / frames).sqrt() as f32));
            let peak = m.peak;
            m.peak = [[0.0; 2]; OUTPUTS];
            m.sum_sq = [[0.0; 2]; OUTPUTS];
            m.frames = 0;
            self.notify(Notification::Meter { peak, rms });
        }
    }

    fn notify(&mut self, notification: Notification) {
        if let Err(rtrb::PushError::Full(notification)) = self.notifications.push(notification) {
            self.stats
                .notifications_dropped
                .fetch_add(1, Ordering::Relaxed);
            // A refused buffer must still leave without being freed here.
            if let Notification::Refused { audio, .. } | Notification::Retired(audio) = notification
            {
                self.keep_for_later(audio);
            }
        }
    }

    fn retire(&mut self, audio: Box<LayerAudio>) {
        match self.notifications.push(Notification::Retired(audio)) {
            Ok(()) => {}
            Err(rtrb::PushError::Full(Notification::Retired(audio))) => self.keep_for_later(audio),
            Err(_) => {}
        }
    }

    fn keep_for_later(&mut self, audio: Box<LayerAudio>) {
        match self.backlog.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(audio),
            None => {
                // NOTE: freeing here would call the allocator on the realtime thread; leaking
                // one buffer under a notification storm is the lesser harm, and it is counted.
                self.stats.buffers_leaked.fetch_add(1, Ordering::Relaxed);
                std::mem::forget(audio);
            }
        }
    }

    fn flush_backlog(&mut self) {
        for slot in &mut self.backlog {
            if let Some(audio) = slot.take()
                && let Err(rtrb::PushError::Full(Notification::Retired(audio))) =
                    self.notifications.push(Notification::Retired(audio))
            {
                *slot = Some(audio);
                return;
            }
        }
    }
}

/// The peak and the sum of squares of `samples`: eight running sums side by side (so the
/// loop vectorises), added up in f64.
fn peak_and_energy(samples: &[f32]) -> (f32, f64) {
    const LANES: usize = 8;
    let (mut peaks, mut sums) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (chunks, rest) = samples.as_chunks::<LANES>();
    for chunk in chunks {
        for l in 0..LANES {
            peaks[l] = larger(peaks[l], chunk[l].abs());
            sums[l] += chunk[l] * chunk[l];
        }
    }
    for (l, &s) in rest.iter().enumerate() {
        peaks[l] = larger(peaks[l], s.abs());
        sums[l] += s * s;
    }
    let peak = peaks.into_iter().fold(0.0, larger);
    (peak, sums.into_iter().map(f64::from).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::FilterMode;

    /// Which ways of running layers a processor may take.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum LayerPath {
        /// Every layer a frame at a time ([`Layer::render`]).
        FrameByFrame,
        /// Steady layers in the bank, their frames copied into lanes ([`Bank::run`]).
        Bank,
        /// And straight from their frames into the sums where all are steady
        /// ([`Bank::run_into`]): what the mixer does.
        Fastest,
    }

    impl LayerPath {
        /// Whether the bank, and its straight path, may run.
        pub(super) fn allows(self) -> (bool, bool) {
            (self != LayerPath::FrameByFrame, self == LayerPath::Fastest)
        }
    }

    fn tone(freq: f32, frames: usize, looped: bool) -> Box<LayerAudio> {
        let at = |i: usize| (std::f32::consts::TAU * freq * i as f32 / 48_000.0).sin();
        let frames: Vec<[f32; 2]> = (0..frames)
            .map(|i| [0.3 * at(i), 0.2 * at(i) + 0.01 * (i % 13) as f32])
            .collect();
        Box::new(LayerAudio {
            frames: frames.into(),
            looped,
        })
    }

    /// Master and group outputs of a busy set (launches on the grid, one-shots, replaces,
    /// stops, every filter mode, gain, pan, mute and solo moves, master changes), played
    /// the given way.
    fn busy_set(path: LayerPath, period: usize, max_block: usize) -> Vec<u32> {
        let mut transport = Transport::default();
        transport.tempo = 123.0;
        transport.rolling = true;
        let (mut p, mut h) = Processor::new(48_000, max_block, transport);
        p.layer_path = path;
        let mut buffers = OutputBuffers::new(period);
        let mut bits = Vec::new();
        let modes = [
            FilterMode::Off,
            FilterMode::LowPass,
            FilterMode::HighPass,
            FilterMode::BandPass,
        ];
        for step in 0..1500u64 {
            let id = step % 20;
            let command = match step % 40 {
                0 | 5 | 7 => Some(Command::Launch {
                    id: id + 100 * (step % 3),
                    audio: tone(
                        50.0 + (step % 97) as f32 * 13.0,
                        3000 + (step as usize * 37) % 9000,
                        step % 9 != 0,
                    ),
                    group: Group::ALL[(step % 4) as usize],
                    params: LayerParams {
                        reverb_send: 0.3,
                        delay_send: 0.2,
                        pan: ((step % 5) as f32 - 2.0) / 2.0,
                        filter: FilterSettings {
                            mode: modes[(step % 4) as usize],
                            cutoff_hz: 300.0 + (step % 50) as f32 * 100.0,
                            resonance: 0.4,
                        },
                        ..LayerParams::default()
                    },
                    at: [Quantize::Now, Quantize::Beat, Quantize::Bar][(step % 3) as usize],
                }),
                10 => Some(Command::Replace {
                    id,
                    audio: tone(220.0, 5000, true),
                    at: Quantize::Beat,
                    crossfade_beats: 0.25,
                }),
                20 => {
                    let sweep = (step % 1000) as f32 / 1000.0;
                    Some(Command::Set {
                        id,
                        params: LayerParams {
                            gain: sweep * 2.0,
                            pan: sweep * 2.0 - 1.0,
                            mute: step % 7 == 0,
                            solo: step % 11 == 0,
                            filter: FilterSettings {
                                mode: modes[(step % 4) as usize],
                                cutoff_hz: 100.0 + sweep * 10_000.0,
                                resonance: sweep,
                            },
                            reverb_send: sweep,
                            delay_send: 1.0 - sweep,
                        },
                    })
                }
                30 if step % 80 == 30 => Some(Command::Remove {
                    id,
                    at: Quantize::Beat,
                }),
                35 => Some(Command::SetFx(MasterFx {
                    eq_low_db: (step % 13) as f32 - 6.0,
                    comp_threshold_db: -20.0,
                    delay_beats: 0.25 + (step % 4) as f32 * 0.25,
                    ..MasterFx::default()
                })),
                _ => None,
            };
            if let Some(command) = command {
                assert!(h.send(command).is_ok());
            }
            p.process(&mut buffers.outputs());
            for buffer in buffers.master.iter().chain(buffers.groups.iter().flatten()) {
                bits.extend(buffer.iter().map(|s| s.to_bits()));
            }
            while h.poll().is_some() {}
        }
        bits
    }

    #[test]
    fn a_master_bus_whose_state_went_non_finite_resets_itself_and_plays_on() {
        let period = 128;
        let mut transport = Transport::default();
        transport.rolling = true;
        let (mut p, mut h) = Processor::new(48_000, period, transport);
        // Poison the reverb, delay, compressor and limiter as a NaN in their input would.
        let mut groups: [[Vec<f32>; 2]; GROUPS] =
            std::array::from_fn(|_| [vec![0.1; period], vec![0.1; period]]);
        groups[2][0][7] = f32::NAN;
        let sends = [
            [vec![f32::NAN; period], vec![0.1; period]],
            [vec![0.1; period], vec![f32::INFINITY; period]],
        ];
        let mut scratch = OutputBuffers::new(period);
        let mut outputs = scratch.outputs();
        let live = vec![[0.0; 2]; period];
        let input = master::BusInput {
            groups: &groups,
            sends: &sends,
            live: &live,
        };
        p.master
            .render(input, 4800.0, &mut outputs.master, 0, period);
        assert!(scratch.master[0].iter().any(|s| !s.is_finite()));

        let launched = h.send(Command::Launch {
            id: 9,
            audio: tone(330.0, 4800, true),
            group: Group::Music,
            params: LayerParams::default(),
            at: Quantize::Now,
        });
        assert!(launched.is_ok());
        let mut buffers = OutputBuffers::new(period);
        let mut stages = Vec::new();
        let mut peak = 0.0f32;
        for block in 0..200 {
            p.process(&mut buffers.outputs());
            let master = buffers.master.iter().flatten();
            assert!(master.clone().all(|s| s.is_finite()), "block {block}");
            if block > 100 {
                peak = master.fold(peak, |m, s| m.max(s.abs()));
            }
            while let Some(note) = h.poll() {
                if let Notification::NonFinite { stage, layer, .. } = note {
                    stages.push((stage, layer));
                }
            }
        }
        assert_eq!(stages, [(Stage::Master, None)]);
        assert!(peak > 0.1, "the layer is heard through the master: {peak}");
    }

    #[test]
    fn settings_that_are_not_numbers_take_their_defaults() {
        let fx = MasterFx {
            reverb_mix: f32::NAN,
            limiter_ceiling_db: f32::NAN,
            comp_ratio: 3.0,
            ..MasterFx::default()
        }
        .clamped();
        assert_eq!(fx.reverb_mix, MasterFx::default().reverb_mix);
        assert_eq!(
            fx.limiter_ceiling_db,
            MasterFx::default().limiter_ceiling_db
        );
        assert_eq!(fx.comp_ratio, 3.0);
    }

    #[test]
    fn the_bank_plays_what_layers_play_frame_by_frame_bit_for_bit() {
        for (period, max_block) in [(64, 64), (100, 64)] {
            let reference = busy_set(LayerPath::FrameByFrame, period, max_block);
            assert!(
                reference.iter().any(|&b| f32::from_bits(b).abs() > 0.01),
                "the set is audible"
            );
            for path in [LayerPath::Bank, LayerPath::Fastest] {
                let bits = busy_set(path, period, max_block);
                let first = reference.iter().zip(&bits).position(|(a, b)| a != b);
                assert_eq!(
                    first, None,
                    "{path:?}, periods of {period}: first sample that differs"
                );
                assert_eq!(bits.len(), reference.len());
            }
        }
    }
}
