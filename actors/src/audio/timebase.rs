//! djinn as JACK's timebase master: publishes its transport's bar, beat, tick, tempo and
//! meter to every JACK client (a DAW, `jack_midi_clock`), so they follow djinn.
//!
//! JACK calls the timebase callback on the process thread right after the process
//! callbacks. It reads what the process callback left in [`TimebaseShare`]: the transport
//! as it stands at the start of the next period.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use djinn_engine::transport::Transport;

/// Ticks per beat in the published position (a common DAW resolution).
const TICKS_PER_BEAT: f64 = 1920.0;

/// The transport as the process callback last left it, for the timebase callback.
#[derive(Debug, Default)]
pub struct TimebaseShare {
    beats: AtomicU64,
    tempo: AtomicU64,
    beats_per_bar: AtomicU32,
    beat_unit: AtomicU32,
    /// Whether djinn holds the timebase.
    pub active: AtomicBool,
}

impl TimebaseShare {
    /// Stores the transport at the start of the next period.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn store(&self, transport: &Transport) {
        self.beats
            .store(transport.beats().max(0.0).to_bits(), Ordering::Relaxed);
        self.tempo
            .store(transport.tempo.to_bits(), Ordering::Relaxed);
        self.beats_per_bar
            .store(u32::from(transport.meter.beats_per_bar), Ordering::Relaxed);
        self.beat_unit
            .store(u32::from(transport.meter.beat_unit), Ordering::Relaxed);
    }
}

/// Fills JACK's position with bars, beats and ticks from djinn's transport.
///
/// Runs on the JACK thread: no allocation, locks, system calls or logging.
///
/// # Safety
///
/// JACK calls it with `pos` pointing at the position to fill and `arg` at the
/// [`TimebaseShare`] given to `jack_set_timebase_callback`, which outlives the client.
pub unsafe extern "C" fn publish(
    _state: jack_sys::jack_transport_state_t,
    _frames: jack_sys::jack_nframes_t,
    pos: *mut jack_sys::jack_position_t,
    _new_pos: libc::c_int,
    arg: *mut libc::c_void,
) {
    if pos.is_null() || arg.is_null() {
        return;
    }
    // SAFETY: see the function's contract.
    let share = unsafe { &*(arg as *const TimebaseShare) };
    let beats = f64::from_bits(share.beats.load(Ordering::Relaxed));
    let tempo = f64::from_bits(share.tempo.load(Ordering::Relaxed));
    let per_bar = share.beats_per_bar.load(Ordering::Relaxed).max(1);
    let unit = share.beat_unit.load(Ordering::Relaxed).max(1);
    let whole = beats.floor();
    let bar = (whole as u64) / u64::from(per_bar);
    let beat = (whole as u64) % u64::from(per_bar);
    let tick = ((beats - whole) * TICKS_PER_BEAT) as i32;
    // NOTE: the struct is packed: every field is written unaligned.
    // SAFETY: `pos` is valid for writes (the function's contract); addr_of_mut makes no
    // reference to a packed field.
    unsafe {
        std::ptr::addr_of_mut!((*pos).bar).write_unaligned((bar + 1) as i32);
        std::ptr::addr_of_mut!((*pos).beat).write_unaligned((beat + 1) as i32);
        std::ptr::addr_of_mut!((*pos).tick).write_unaligned(tick.clamp(0, 1919));
        std::ptr::addr_of_mut!((*pos).bar_start_tick)
            .write_unaligned(bar as f64 * f64::from(per_bar) * TICKS_PER_BEAT);
        std::ptr::addr_of_mut!((*pos).beats_per_bar).write_unaligned(per_bar as f32);
        std::ptr::addr_of_mut!((*pos).beat_type).write_unaligned(unit as f32);
        std::ptr::addr_of_mut!((*pos).ticks_per_beat).write_unaligned(TICKS_PER_BEAT);
        std::ptr::addr_of_mut!((*pos).beats_per_minute).write_unaligned(tempo);
        let valid = std::ptr::addr_of_mut!((*pos).valid);
        valid.write_unaligned(valid.read_unaligned() | jack_sys::JackPositionBBT);
    }
}
