//! The bounds on layer audio: how long one layer may be and how much memory all of them
//! may hold together.
//!
//! Memory is reserved before audio is decoded or copied, and the reservation travels with
//! the layer into the audio actor's table, so the total holds while requests run side by
//! side; it is given back when the layer (or the audio a replace swapped out) is dropped.
//! This module only counts: it never allocates audio itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes a stereo f32 frame takes.
pub const FRAME_BYTES: u64 = 8;

/// Why a layer is refused for its size.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayerLimitError {
    /// The layer is longer than `audio.max_layer_seconds`.
    #[error(
        "the layer is longer than audio.max_layer_seconds ({max_seconds} s){}: trim it, or \
         raise the limit in the configuration",
        seconds.map(|s| format!(": it lasts {s:.1} s")).unwrap_or_default()
    )]
    TooLong {
        /// Its length, where known.
        seconds: Option<f64>,
        max_seconds: f64,
    },
    /// The layers would hold more than `audio.max_layer_memory_mb` together.
    #[error(
        "layer memory is full: the layers hold {used_mb} MB of the {limit_mb} MB \
         audio.max_layer_memory_mb allows, and this one needs {wanted_mb} MB more; remove \
         a layer, or raise the limit in the configuration"
    )]
    MemoryFull {
        used_mb: u64,
        limit_mb: u64,
        wanted_mb: u64,
    },
}

/// The limits and the memory in use, shared by the control handlers and the audio actor.
#[derive(Debug)]
pub struct LayerMemory {
    limit: AtomicU64,
    max_seconds_bits: AtomicU64,
    used: AtomicU64,
}

fn mb(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

impl LayerMemory {
    pub fn new(max_seconds: f64, limit_bytes: u64) -> Arc<LayerMemory> {
        Arc::new(LayerMemory {
            limit: AtomicU64::new(limit_bytes),
            max_seconds_bits: AtomicU64::new(max_seconds.to_bits()),
            used: AtomicU64::new(0),
        })
    }

    /// Changes the limits (a configuration reload); what is held already stays.
    pub fn set_limits(&self, max_seconds: f64, limit_bytes: u64) {
        self.limit.store(limit_bytes, Ordering::Relaxed);
        self.max_seconds_bits
            .store(max_seconds.to_bits(), Ordering::Relaxed);
    }

    pub fn max_seconds(&self) -> f64 {
        f64::from_bits(self.max_seconds_bits.load(Ordering::Relaxed))
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes reserved now, by layers and by layers being prepared.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Refuses `frames` at `rate` when they are longer than one layer may be.
    pub fn check_length(&self, frames: usize, rate: u32) -> Result<(), LayerLimitError> {
        let max_seconds = self.max_seconds();
        let seconds = frames as f64 / f64::from(rate.max(1));
        // Half a millisecond of slack: resampling rounds a file at the limit up a frame.
        if seconds > max_seconds + 5e-4 {
            return Err(LayerLimitError::TooLong {
                seconds: Some(seconds),
                max_seconds,
            });
        }
        Ok(())
    }

    /// The error for a layer that needs `bytes` more than there is room for.
    pub fn full(&self, bytes: u64) -> LayerLimitError {
        LayerLimitError::MemoryFull {
            used_mb: mb(self.used_bytes()),
            limit_mb: mb(self.limit_bytes()),
            wanted_mb: mb(bytes),
        }
    }

    /// Reserves `bytes`, or says how full the layers are.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, LayerLimitError> {
        let limit = self.limit_bytes();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .map_err(|used| LayerLimitError::MemoryFull {
                used_mb: mb(used),
                limit_mb: mb(limit),
                wanted_mb: mb(bytes),
            })?;
        Ok(Reservation {
            memory: self.clone(),
            bytes,
        })
    }

    /// Reserves `bytes`, or as much as is left when that is less (at least one frame):
    /// for audio whose length is not known before it is decoded.
    pub fn reserve_up_to(self: &Arc<Self>, bytes: u64) -> Result<Reservation, LayerLimitError> {
        let limit = self.limit_bytes();
        let left = limit.saturating_sub(self.used_bytes());
        self.reserve(bytes.min(left).max(FRAME_BYTES))
    }
}

/// Memory held for one layer's audio; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    memory: Arc<LayerMemory>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows or shrinks the reservation to what the audio turned out to take.
    pub fn resize(&mut self, bytes: u64) -> Result<(), LayerLimitError> {
        if bytes > self.bytes {
            let more = self.memory.reserve(bytes - self.bytes)?;
            self.bytes += more.bytes;
            std::mem::forget(more);
        } else {
            self.memory
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.memory.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_hold_the_total_and_give_it_back() {
        let memory = LayerMemory::new(10.0, 1000);
        let a = memory.reserve(600).unwrap();
        let err = memory.reserve(500).unwrap_err();
        assert!(matches!(err, LayerLimitError::MemoryFull { .. }), "{err}");
        assert!(
            err.to_string().contains("audio.max_layer_memory_mb"),
            "{err}"
        );
        let mut b = memory.reserve_up_to(500).unwrap();
        assert_eq!(b.bytes(), 400, "what is left");
        b.resize(100).unwrap();
        assert_eq!(memory.used_bytes(), 700);
        assert!(b.resize(500).is_err(), "growing past the total is refused");
        drop(a);
        b.resize(500).unwrap();
        assert_eq!(memory.used_bytes(), 500);
        drop(b);
        assert_eq!(memory.used_bytes(), 0);
    }

    #[test]
    fn the_length_limit_names_its_setting() {
        let memory = LayerMemory::new(2.0, 1 << 30);
        memory.check_length(96_000, 48_000).unwrap();
        let err = memory.check_length(96_100, 48_000).unwrap_err();
        assert!(err.to_string().contains("audio.max_layer_seconds"), "{err}");
    }
}
