//! Pipe mode, the realtime side: the inputs go out in fixed blocks to a worker thread (which
//! runs them through an external command), and come back a fixed latency later.
//!
//! Blocks circulate between the two threads through four rtrb rings, so the realtime
//! thread never allocates or frees: it takes an empty block, fills it with input and sends
//! it; it plays processed blocks back by their start frame, and returns them when played.
//! A sample whose processed block is not there in time (the command stalled, died, or is
//! restarting) is played dry, delayed by the same latency: the pipe is bypassed, never
//! waited on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtrb::{Consumer, Producer, RingBuffer};

/// Frames per block sent to the command.
pub const PIPE_BLOCK: usize = 1024;
/// Frames between an input and its processed output, for blocks of `block` frames: one
/// block to fill, one to process.
pub const fn latency(block: usize) -> usize {
    2 * block
}

/// Blocks in circulation.
const POOL: usize = 8;

/// One block of stereo frames and the input frame it starts at.
#[derive(Debug)]
pub struct PipeBlock {
    pub start: u64,
    pub frames: Vec<[f32; 2]>,
}

/// What the pipe has done, for `daemon.status`.
#[derive(Debug, Default)]
pub struct PipeStats {
    /// Frames played dry because their processed block was not back in time.
    pub bypassed_frames: AtomicU64,
    /// Frames played from the command.
    pub processed_frames: AtomicU64,
    /// Input frames lost because every block was in use.
    pub overflow_frames: AtomicU64,
}

/// The worker's ends of the rings.
pub struct PipeEnds {
    /// Empty blocks for the realtime thread to fill.
    pub empties: Producer<Box<PipeBlock>>,
    /// Filled input blocks.
    pub inputs: Consumer<Box<PipeBlock>>,
    /// Processed blocks.
    pub outputs: Producer<Box<PipeBlock>>,
    /// Played blocks, to be filled again.
    pub used: Consumer<Box<PipeBlock>>,
    pub stats: Arc<PipeStats>,
    pub block: usize,
}

/// The realtime side.
pub(super) struct PipeTap {
    empties: Consumer<Box<PipeBlock>>,
    inputs: Producer<Box<PipeBlock>>,
    outputs: Consumer<Box<PipeBlock>>,
    used: Producer<Box<PipeBlock>>,
    filling: Option<Box<PipeBlock>>,
    fill: usize,
    playing: Option<Box<PipeBlock>>,
    /// The dry inputs, `latency` frames back: the bypass.
    dry: Vec<[f32; 2]>,
    dry_pos: usize,
    /// Input frames seen since the pipe was built.
    frame: u64,
    block: usize,
    stats: Arc<PipeStats>,
}

impl PipeTap {
    /// The tap and the worker's ends; blocks of `block` frames, `2 × block` latency.
    pub(super) fn new(block: usize) -> (PipeTap, PipeEnds) {
        let (empties_tx, empties_rx) = RingBuffer::new(POOL);
        let (inputs_tx, inputs_rx) = RingBuffer::new(POOL);
        let (outputs_tx, outputs_rx) = RingBuffer::new(POOL);
        let (used_tx, used_rx) = RingBuffer::new(POOL);
        let stats = Arc::new(PipeStats::default());
        let mut ends = PipeEnds {
            empties: empties_tx,
            inputs: inputs_rx,
            outputs: outputs_tx,
            used: used_rx,
            stats: stats.clone(),
            block,
        };
        for _ in 0..POOL {
            let _ = ends.empties.push(Box::new(PipeBlock {
                start: 0,
                frames: vec![[0.0; 2]; block],
            }));
        }
        let tap = PipeTap {
            empties: empties_rx,
            inputs: inputs_tx,
            outputs: outputs_rx,
            used: used_tx,
            filling: None,
            fill: 0,
            playing: None,
            dry: vec![[0.0; 2]; latency(block)],
            dry_pos: 0,
            frame: 0,
            block,
            stats,
        };
        (tap, ends)
    }

    /// Forgets what the pipe held before it was turned off: the dry line and a half-filled
    /// block (processed blocks left over are stale by their start frames, and handed back as
    /// they come). Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn reset(&mut self) {
        self.dry.iter_mut().for_each(|f| *f = [0.0; 2]);
        self.dry_pos = 0;
        self.fill = 0;
    }

    /// Hands a played block back to the worker (it owns the pool).
    fn give_back(&mut self, block: Box<PipeBlock>) {
        // NOTE: the used ring holds the whole pool, so this cannot fail; if it did, the block
        // is forgotten rather than freed here.
        if let Err(rtrb::PushError::Full(block)) = self.used.push(block) {
            std::mem::forget(block);
        }
    }

    /// One input frame in, the processed (or bypassed) frame `latency` frames back out.
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    #[inline]
    pub(super) fn process(&mut self, x: [f32; 2]) -> [f32; 2] {
        // Capture.
        if self.filling.is_none() {
            self.filling = self.empties.pop().ok();
            self.fill = 0;
        }
        match &mut self.filling {
            Some(block) => {
                if self.fill == 0 {
                    block.start = self.frame;
                }
                if let Some(slot) = block.frames.get_mut(self.fill) {
                    *slot = x;
                }
                self.fill += 1;
                if self.fill >= self.block
                    && let Some(block) = self.filling.take()
                    && let Err(rtrb::PushError::Full(block)) = self.inputs.push(block)
                {
                    self.filling = Some(block);
                    self.fill = 0;
                    self.stats
                        .overflow_frames
                        .fetch_add(self.block as u64, Ordering::Relaxed);
                }
            }
            None => {
                self.stats.overflow_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The dry delay line: the bypass.
        let dry = self.dry.get(self.dry_pos).copied().unwrap_or([0.0; 2]);
        if let Some(slot) = self.dry.get_mut(self.dry_pos) {
            *slot = x;
        }
        self.dry_pos += 1;
        if self.dry_pos >= self.dry.len() {
            self.dry_pos = 0;
        }
        let latency = self.dry.len() as u64;
        let out = match self.frame.checked_sub(latency) {
            Some(wanted) => self.processed(wanted).unwrap_or_else(|| {
                self.stats.bypassed_frames.fetch_add(1, Ordering::Relaxed);
                dry
            }),
            None => dry,
        };
        self.frame += 1;
        out
    }

    /// The processed frame `wanted`, when its block is back.
    fn processed(&mut self, wanted: u64) -> Option<[f32; 2]> {
        loop {
            if let Some(block) = &self.playing {
                let end = block.start + block.frames.len() as u64;
                if wanted < block.start {
                    return None;
                }
                if wanted < end {
                    self.stats.processed_frames.fetch_add(1, Ordering::Relaxed);
                    return block.frames.get((wanted - block.start) as usize).copied();
                }
                // Played out (or stale after a restart): back to the worker.
                if let Some(done) = self.playing.take() {
                    self.give_back(done);
                }
            }
            match self.outputs.pop() {
                Ok(next) => self.playing = Some(next),
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that hands every block straight back (an echo), `lag` blocks late.
    fn echo(ends: &mut PipeEnds) {
        while let Ok(block) = ends.inputs.pop() {
            ends.outputs.push(block).unwrap();
        }
        while let Ok(block) = ends.used.pop() {
            ends.empties.push(block).unwrap();
        }
    }

    fn ramp(n: u64) -> [f32; 2] {
        let v = n as f32 * 1e-4;
        [v, -v]
    }

    #[test]
    fn an_echo_comes_back_exactly_the_latency_later() {
        let (mut tap, mut ends) = PipeTap::new(64);
        let latency = latency(64) as u64;
        for n in 0..10_000u64 {
            let y = tap.process(ramp(n));
            if n % 16 == 0 {
                echo(&mut ends);
            }
            if n >= latency {
                assert_eq!(y, ramp(n - latency), "frame {n}");
            }
        }
        assert_eq!(ends.stats.bypassed_frames.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_silent_worker_is_bypassed_with_the_same_latency() {
        let (mut tap, ends) = PipeTap::new(64);
        let latency = latency(64) as u64;
        for n in 0..1_000u64 {
            let y = tap.process(ramp(n));
            if n >= latency {
                assert_eq!(y, ramp(n - latency));
            }
        }
        assert!(ends.stats.bypassed_frames.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn after_a_reset_nothing_from_before_comes_back() {
        let (mut tap, _ends) = PipeTap::new(64);
        for n in 0..500u64 {
            tap.process(ramp(n + 1));
        }
        tap.reset();
        for _ in 0..latency(64) {
            assert_eq!(tap.process([0.0; 2]), [0.0; 2]);
        }
    }
}
