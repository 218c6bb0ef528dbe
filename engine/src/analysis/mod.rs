//! Listening to audio: loudness, tempo, key, pitch content, spectral bands and an overall
//! quality assessment.
//!
//! Plain functions over stereo `[f32; 2]` frames; nothing here runs on the JACK thread.

pub mod bands;
pub mod chroma;
pub mod describe;
pub mod key;
pub mod loudness;
pub mod quality;
pub mod tempo;

pub use loudness::{LoudnessError, LoudnessReport};
