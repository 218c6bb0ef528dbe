//! djinn-engine: the DSP and music of djinn, in plain synchronous Rust.
//!
//! Everything here is callable from any thread and knows nothing of actors, async runtimes or
//! scripting: music theory, the transport, style profiles, and (as djinn grows) synthesis,
//! the realtime mixer, analysis and file formats. The daemon and its actors build on it; it
//! never calls back into them.

pub mod analysis;
pub mod chain;
pub mod clock;
pub mod decode;
pub mod dsp;
pub mod files;
pub mod mix;
pub mod music;
pub mod profile;
pub mod stretch;
pub mod synth;
pub mod transport;
pub mod wav;
pub mod work;
