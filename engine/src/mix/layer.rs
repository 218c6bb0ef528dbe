//! One layer slot of the mixer: the voice playing now, a voice waiting for its beat, and a
//! voice fading out after a replace.

use std::f32::consts::FRAC_PI_2;

use super::bank::Steady;
use super::{GROUPS, Group, LayerAudio, LayerId, LayerParams};
use crate::dsp::{Smoother, Svf, all_finite};
use crate::transport::ON_BEAT;

/// Frames over which a stopped layer fades out, so a stop never clicks.
const STOP_FADE: usize = 256;
/// Glide time of gain, pan, mute and sends.
const PARAM_GLIDE_S: f32 = 0.02;

struct Voice {
    audio: Box<LayerAudio>,
    pos: usize,
    fade: Option<Fade>,
}

impl Voice {
    /// Moves the voice `frames` on, at most to the end of its audio; a loop that reaches
    /// its end starts again from its first frame.
    #[inline]
    fn step_on(&mut self, frames: usize) {
        self.pos += frames;
        if self.pos >= self.audio.frames.len() && self.audio.looped {
            self.pos = 0;
        }
    }
}

impl Voice {
    /// Whether the last `n` frames the voice played (up to where it is now, a loop's end
    /// included where it wrapped) are finite.
    fn played_finite(&self, n: usize) -> bool {
        let frames = &self.audio.frames;
        let pos = self.pos.min(frames.len());
        let recent = frames.get(pos.saturating_sub(n)..pos).unwrap_or_default();
        let wrapped = if self.audio.looped && pos < n {
            frames
                .get(frames.len().saturating_sub(n - pos)..)
                .unwrap_or_default()
        } else {
            &[]
        };
        all_finite(recent.as_flattened()) && all_finite(wrapped.as_flattened())
    }
}

/// `params` with any setting that is not a number (a script's 0/0) at its default: one
/// such value would otherwise glide every sample of the layer to NaN.
fn settled(params: LayerParams) -> LayerParams {
    let d = LayerParams::default();
    let or = |v: f32, default: f32| if v.is_nan() { default } else { v };
    LayerParams {
        gain: or(params.gain, d.gain),
        pan: or(params.pan, d.pan),
        filter: super::FilterSettings {
            cutoff_hz: or(params.filter.cutoff_hz, d.filter.cutoff_hz),
            resonance: or(params.filter.resonance, d.filter.resonance),
            ..params.filter
        },
        reverb_send: or(params.reverb_send, d.reverb_send),
        delay_send: or(params.delay_send, d.delay_send),
        ..params
    }
}

#[derive(Clone, Copy)]
struct Fade {
    done: usize,
    len: usize,
    rising: bool,
}

impl Fade {
    /// The equal-power gain at this point of the fade, then one step on.
    #[inline]
    fn step(&mut self) -> f32 {
        let t = (self.done as f32 / self.len.max(1) as f32).min(1.0);
        self.done += 1;
        if self.rising {
            (t * FRAC_PI_2).sin()
        } else {
            (t * FRAC_PI_2).cos()
        }
    }

    fn finished(&self) -> bool {
        self.done >= self.len
    }
}

enum PendingKind {
    Launch,
    Replace { crossfade: usize },
}

struct Pending {
    audio: Box<LayerAudio>,
    target: Option<f64>,
    kind: PendingKind,
}

/// What happened in a layer during one block.
#[derive(Clone, Copy)]
pub(super) enum Event {
    Started(LayerId, u64, f64),
    Replaced(LayerId, u64),
    Ended(LayerId, u64),
}

/// A few events per block, without allocating.
#[derive(Default)]
pub(super) struct Events {
    list: [Option<Event>; 4],
}

impl Events {
    fn push(&mut self, event: Event) {
        if let Some(slot) = self.list.iter_mut().find(|e| e.is_none()) {
            *slot = Some(event);
        }
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.list.iter_mut().filter_map(Option::take)
    }
}

/// Where a block sits on the timeline.
#[derive(Clone, Copy)]
pub(super) struct Block {
    pub frame0: u64,
    pub beats0: f64,
    pub beats_per_frame: f64,
    /// The grid position launches may not pass in this block: the next external clock
    /// tick that has not arrived yet (infinite when the transport runs on its own).
    pub ceiling: f64,
    pub n: usize,
    pub any_solo: bool,
}

pub(super) struct Layer {
    id: Option<LayerId>,
    group: Group,
    current: Option<Voice>,
    outgoing: Option<Voice>,
    pending: Option<Pending>,
    /// Some(target) once a stop is asked for; the inner None means now.
    stop_at: Option<Option<f64>>,
    stopping: Option<Fade>,
    retired: [Option<Box<LayerAudio>>; 3],
    params: LayerParams,
    gain: Smoother,
    pan: Smoother,
    gate: Smoother,
    reverb: Smoother,
    delay: Smoother,
    filter: Svf,
    sample_rate: f32,
    pan_cached: f32,
    pan_gains: [f32; 2],
}

impl Layer {
    pub(super) fn new(sample_rate: f32) -> Self {
        let s = |v| Smoother::new(v, PARAM_GLIDE_S, sample_rate);
        Self {
            id: None,
            group: Group::Music,
            current: None,
            outgoing: None,
            pending: None,
            stop_at: None,
            stopping: None,
            retired: [None, None, None],
            params: LayerParams::default(),
            gain: s(1.0),
            pan: s(0.0),
            gate: s(1.0),
            reverb: s(0.0),
            delay: s(0.0),
            filter: Svf::new(sample_rate),
            sample_rate,
            pan_cached: 0.0,
            pan_gains: [1.0, 1.0],
        }
    }

    pub(super) fn is_free(&self) -> bool {
        self.id.is_none()
    }

    pub(super) fn id(&self) -> Option<LayerId> {
        self.id
    }

    pub(super) fn is_soloed(&self) -> bool {
        self.id.is_some() && self.params.solo
    }

    pub(super) fn launch(
        &mut self,
        id: LayerId,
        audio: Box<LayerAudio>,
        group: Group,
        params: LayerParams,
        target: Option<f64>,
    ) {
        let params = settled(params);
        self.id = Some(id);
        self.group = group;
        self.stop_at = None;
        self.stopping = None;
        self.params = params;
        // A new layer starts at its settings; only later changes glide.
        self.gain.reset(params.gain.clamp(0.0, 4.0));
        self.pan.reset(params.pan.clamp(-1.0, 1.0));
        self.gate.reset(if params.mute { 0.0 } else { 1.0 });
        self.reverb.reset(params.reverb_send.clamp(0.0, 1.0));
        self.delay.reset(params.delay_send.clamp(0.0, 1.0));
        self.filter = Svf::new(self.sample_rate);
        let f = params.filter;
        self.filter.set(f.mode, f.cutoff_hz, f.resonance);
        self.pending = Some(Pending {
            audio,
            target,
            kind: PendingKind::Launch,
        });
    }

    /// Queues a replace; returns a buffer that was already waiting, to be retired.
    pub(super) fn replace(
        &mut self,
        audio: Box<LayerAudio>,
        target: Option<f64>,
        crossfade: usize,
    ) -> Option<Box<LayerAudio>> {
        let previous = self.pending.take().map(|p| p.audio);
        self.pending = Some(Pending {
            audio,
            target,
            kind: PendingKind::Replace { crossfade },
        });
        previous
    }

    pub(super) fn stop(&mut self, target: Option<f64>) {
        if self.stop_at.is_none() {
            self.stop_at = Some(target);
        }
    }

    pub(super) fn set_params(&mut self, params: LayerParams) {
        let params = settled(params);
        self.params = params;
        self.gain.set(params.gain.clamp(0.0, 4.0));
        self.pan.set(params.pan.clamp(-1.0, 1.0));
        self.reverb.set(params.reverb_send.clamp(0.0, 1.0));
        self.delay.set(params.delay_send.clamp(0.0, 1.0));
        let f = params.filter;
        self.filter.set(f.mode, f.cutoff_hz, f.resonance);
    }

    pub(super) fn take_retired(&mut self) -> Option<Box<LayerAudio>> {
        self.retired.iter_mut().find_map(Option::take)
    }

    fn retire(&mut self, audio: Box<LayerAudio>) {
        match self.retired.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(audio),
            // Three buffers at most leave a layer in one block (current, outgoing, pending).
            None => std::mem::forget(audio),
        }
    }

    fn free(&mut self) {
        for voice in [self.current.take(), self.outgoing.take()]
            .into_iter()
            .flatten()
        {
            self.retire(voice.audio);
        }
        if let Some(pending) = self.pending.take() {
            self.retire(pending.audio);
        }
        self.id = None;
        self.stop_at = None;
        self.stopping = None;
    }

    /// Whether the layer is where a block's sums went non-finite: its own state (filter,
    /// glides) is not finite, or the last `n` frames its voices played hold a non-finite
    /// sample. Its state is then reset (the filter emptied, the glides at its settings) so
    /// the next block starts clean; audio that holds such a sample plays on, and the mixer
    /// silences the blocks it spoils. Looked at only after a block whose sums were not
    /// finite: the cost is the layer's state and `n` frames a voice.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn recover(&mut self, n: usize) -> bool {
        if self.id.is_none() {
            return false;
        }
        let smoothers = [&self.gain, &self.pan, &self.gate, &self.reverb, &self.delay];
        let state_finite = self.filter.is_finite()
            && self.pan_gains.iter().all(|g| g.is_finite())
            && smoothers
                .iter()
                .all(|s| s.value().is_finite() && s.target().is_finite());
        let audio_finite = [&self.current, &self.outgoing]
            .into_iter()
            .flatten()
            .all(|voice| voice.played_finite(n));
        if !state_finite {
            let p = self.params;
            self.filter.reset();
            self.gain.heal(p.gain.clamp(0.0, 4.0));
            self.pan.heal(p.pan.clamp(-1.0, 1.0));
            self.gate.heal(if p.mute { 0.0 } else { 1.0 });
            self.reverb.heal(p.reverb_send.clamp(0.0, 1.0));
            self.delay.heal(p.delay_send.clamp(0.0, 1.0));
            self.pan_cached = self.pan.value();
            self.pan_gains = Self::balance(self.pan_cached);
        }
        !(state_finite && audio_finite)
    }

    /// Moves the playing voices on by `frames` without sounding them: the frames an xrun
    /// skipped, so loops stay on the transport's grid.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn skip(&mut self, frames: usize) {
        for voice in [&mut self.current, &mut self.outgoing]
            .into_iter()
            .flatten()
        {
            let len = voice.audio.frames.len().max(1);
            voice.pos = if voice.audio.looped {
                (voice.pos + frames) % len
            } else {
                voice.pos.saturating_add(frames)
            };
            if let Some(fade) = &mut voice.fade {
                fade.done = fade.done.saturating_add(frames);
            }
        }
    }

    /// How the layer plays `block` when it plays it steadily: one voice from its first frame
    /// to its last, with nothing waiting, fading or gliding (gain, pan, mute, solo, sends and
    /// cutoff all at rest). Such a block is the same for every frame but its samples, and
    /// the mixer runs it beside the other steady layers ([`super::bank`]) instead of
    /// through [`Layer::render`]. Sets the gate for the block either way.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn steady(&mut self, block: &Block) -> Option<Steady> {
        self.id?;
        let audible = !(self.params.mute || (block.any_solo && !self.params.solo));
        self.gate.set(if audible { 1.0 } else { 0.0 });
        let waiting = self.pending.is_some() || self.stop_at.is_some();
        if waiting || self.stopping.is_some() || self.outgoing.is_some() {
            return None;
        }
        let voice = self.current.as_ref()?;
        let len = voice.audio.frames.len();
        let runs_out = !voice.audio.looped && voice.pos + block.n > len;
        if voice.fade.is_some() || voice.pos >= len || runs_out {
            return None;
        }
        let smoothers = [&self.gain, &self.gate, &self.pan, &self.reverb, &self.delay];
        if !smoothers.iter().all(|s| s.is_settled()) {
            return None;
        }
        let filter = self.filter.steady()?;
        let pan = self.pan.value();
        if pan != self.pan_cached {
            self.pan_cached = pan;
            self.pan_gains = Self::balance(pan);
        }
        Some(Steady {
            filter,
            gain: self.gain.value() * self.gate.value(),
            balance: self.pan_gains,
            sends: [self.reverb.value(), self.delay.value()],
            group: self.group.index(),
        })
    }

    /// Copies the next `n` frames of a steady layer's voice into two lanes of `frames`
    /// (frame `i`'s left at `i * stride + lane`, its right after it) and moves the voice on.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn gather(&mut self, n: usize, frames: &mut [f32], stride: usize, lane: usize) {
        let Some(voice) = &mut self.current else {
            return;
        };
        let mut rows = frames.chunks_exact_mut(stride.max(1)).take(n);
        let mut left = n;
        // Straight runs of the voice's frames, from where it is to its end or the block's.
        while left > 0 {
            let audio = &voice.audio.frames;
            let Some(run) = audio.get(voice.pos..(voice.pos + left).min(audio.len())) else {
                break;
            };
            if run.is_empty() {
                break;
            }
            // The run first: a zip takes from its first side before it knows the second
            // has ended, and no row may be lost.
            for (frame, row) in run.iter().zip(rows.by_ref()) {
                if let Some(dst) = row.get_mut(lane..lane + 2) {
                    dst.copy_from_slice(frame);
                }
            }
            left -= run.len();
            voice.step_on(run.len());
        }
    }

    /// The next `n` frames of a steady layer's voice as one straight run; empty where the
    /// voice wraps inside them.
    pub(super) fn block_source(&self, n: usize) -> &[[f32; 2]] {
        let voice = self.current.as_ref();
        voice
            .and_then(|v| v.audio.frames.get(v.pos..v.pos + n))
            .unwrap_or_default()
    }

    /// Moves a steady layer's voice on past the `n` frames of [`Layer::block_source`].
    pub(super) fn advance(&mut self, n: usize) {
        if let Some(voice) = &mut self.current {
            voice.step_on(n);
        }
    }

    /// Takes back the filter state a steady block ran to (`None`: an unfiltered layer,
    /// whose state did not move).
    pub(super) fn resume(&mut self, state: Option<([f32; 2], [f32; 2])>) {
        if let Some((ic1, ic2)) = state {
            self.filter.resume(ic1, ic2);
        }
    }

    /// The left and right gains of a pan position (-1 to 1): the far side falls away.
    fn balance(pan: f32) -> [f32; 2] {
        if pan >= 0.0 {
            [(pan * FRAC_PI_2).cos(), 1.0]
        } else {
            [1.0, (-pan * FRAC_PI_2).cos()]
        }
    }

    /// Renders one block into the group and send buffers.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn render(
        &mut self,
        block: Block,
        groups: &mut [[Vec<f32>; 2]; GROUPS],
        [reverb_l, reverb_r]: &mut [Vec<f32>; 2],
        [delay_l, delay_r]: &mut [Vec<f32>; 2],
        events: &mut Events,
    ) {
        let Some(id) = self.id else { return };
        let audible = !(self.params.mute || (block.any_solo && !self.params.solo));
        self.gate.set(if audible { 1.0 } else { 0.0 });
        let Some([out_l, out_r]) = groups.get_mut(self.group.index()) else {
            return;
        };
        for i in 0..block.n {
            // Grid checks only while something waits for its beat.
            if self.pending.is_some() || (self.stop_at.is_some() && self.stopping.is_none()) {
                let beat = (block.beats0 + i as f64 * block.beats_per_frame).min(block.ceiling);
                let frame = block.frame0 + i as u64;
                let due = |target: Option<f64>| target.is_none_or(|t| beat >= t - ON_BEAT);
                if self.pending.as_ref().is_some_and(|p| due(p.target))
                    && let Some(pending) = self.pending.take()
                {
                    self.activate(id, pending, frame, beat, events);
                }
                if self.stopping.is_none()
                    && self.current.is_some()
                    && self.stop_at.is_some_and(due)
                {
                    self.stopping = Some(Fade {
                        done: 0,
                        len: STOP_FADE,
                        rising: false,
                    });
                }
            }
            let frame = block.frame0 + i as u64;
            let Some(mut sample) = self.next_sample() else {
                if self.current.is_none() && self.pending.is_none() && self.outgoing.is_none() {
                    // A one-shot ran out, or a stop finished: the layer is over.
                    events.push(Event::Ended(id, frame));
                    self.free();
                    return;
                }
                continue;
            };
            if let Some(fade) = &mut self.stopping {
                let g = fade.step();
                sample = [sample[0] * g, sample[1] * g];
                if fade.finished() {
                    events.push(Event::Ended(id, frame));
                    self.free();
                    return;
                }
            }
            let filtered = self.filter.process(sample);
            let gain = self.gain.next_value() * self.gate.next_value();
            let pan = self.pan.next_value();
            if pan != self.pan_cached {
                // Balance gains only change while the pan glides: computed then, cached after.
                self.pan_cached = pan;
                self.pan_gains = Self::balance(pan);
            }
            let [left, right] = self.pan_gains;
            let l = filtered[0] * gain * left;
            let r = filtered[1] * gain * right;
            if let (Some(ol), Some(or)) = (out_l.get_mut(i), out_r.get_mut(i)) {
                *ol += l;
                *or += r;
            }
            let (rv, dl) = (self.reverb.next_value(), self.delay.next_value());
            if let (Some(sl), Some(sr)) = (reverb_l.get_mut(i), reverb_r.get_mut(i)) {
                *sl += l * rv;
                *sr += r * rv;
            }
            if let (Some(sl), Some(sr)) = (delay_l.get_mut(i), delay_r.get_mut(i)) {
                *sl += l * dl;
                *sr += r * dl;
            }
        }
    }

    fn activate(
        &mut self,
        id: LayerId,
        pending: Pending,
        frame: u64,
        beat: f64,
        events: &mut Events,
    ) {
        match pending.kind {
            PendingKind::Launch => {
                if let Some(old) = self.current.take() {
                    self.retire(old.audio);
                }
                self.current = Some(Voice {
                    audio: pending.audio,
                    pos: 0,
                    fade: None,
                });
                events.push(Event::Started(id, frame, beat));
            }
            PendingKind::Replace { crossfade } => {
                if let Some(old) = self.outgoing.take() {
                    self.retire(old.audio);
                }
                self.outgoing = self.current.take().map(|mut voice| {
                    voice.fade = Some(Fade {
                        done: 0,
                        len: crossfade,
                        rising: false,
                    });
                    voice
                });
                self.current = Some(Voice {
                    audio: pending.audio,
                    pos: 0,
                    fade: Some(Fade {
                        done: 0,
                        len: crossfade,
                        rising: true,
                    }),
                });
                events.push(Event::Replaced(id, frame));
            }
        }
    }

    /// The next stereo frame of the current and outgoing voices; None when nothing plays.
    #[inline]
    fn next_sample(&mut self) -> Option<[f32; 2]> {
        let mut playing = false;
        let mut mix = [0.0f32; 2];
        let mut ended = [false; 2];
        for (slot, done) in [&mut self.current, &mut self.outgoing]
            .into_iter()
            .zip(&mut ended)
        {
            let Some(voice) = slot else { continue };
            let Some(frame) = voice.audio.frames.get(voice.pos).copied() else {
                *done = true;
                continue;
            };
            playing = true;
            let g = match &mut voice.fade {
                Some(fade) if fade.finished() => {
                    if fade.rising {
                        voice.fade = None;
                        1.0
                    } else {
                        *done = true;
                        0.0
                    }
                }
                Some(fade) => fade.step(),
                None => 1.0,
            };
            mix[0] += frame[0] * g;
            mix[1] += frame[1] * g;
            voice.step_on(1);
        }
        for (index, done) in ended.into_iter().enumerate() {
            if done {
                let voice = if index == 0 {
                    self.current.take()
                } else {
                    self.outgoing.take()
                };
                if let Some(voice) = voice {
                    self.retire(voice.audio);
                }
            }
        }
        playing.then_some(mix)
    }
}
