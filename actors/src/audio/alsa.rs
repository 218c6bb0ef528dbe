//! MIDI clock from an ALSA sequencer port (hardware without a2jmidid), through midir.
//!
//! midir calls back on its own thread; each clock message is stamped there on JACK's
//! microsecond clock and queued for the mixer, which places it at its frame. The queue's
//! producer is swapped when the mixer is rebuilt (a JACK server that came back), so the
//! connection itself survives.

use std::sync::{Arc, Mutex};

use djinn_engine::clock::ClockMessage;
use djinn_engine::mix::{StampedClock, clock_feed};
use rtrb::{Consumer, Producer};

/// An open connection to an ALSA sequencer port.
pub struct AlsaClock {
    _connection: midir::MidiInputConnection<()>,
    producer: Arc<Mutex<Producer<StampedClock>>>,
    /// The port's full name.
    pub port: String,
}

impl AlsaClock {
    /// Connects to the first ALSA input port whose name contains `wanted`; returns the
    /// connection and the consumer for the mixer.
    pub fn connect(wanted: &str) -> Result<(AlsaClock, Consumer<StampedClock>), String> {
        if !std::path::Path::new("/dev/snd/seq").exists() {
            return Err("no ALSA sequencer (/dev/snd/seq is missing)".into());
        }
        let input = midir::MidiInput::new("djinn").map_err(|e| e.to_string())?;
        let port = input
            .ports()
            .into_iter()
            .find(|p| input.port_name(p).is_ok_and(|name| name.contains(wanted)))
            .ok_or_else(|| format!("no ALSA MIDI input port named like {wanted:?}"))?;
        let name = input.port_name(&port).map_err(|e| e.to_string())?;
        let (producer, consumer) = clock_feed();
        let producer = Arc::new(Mutex::new(producer));
        let shared = producer.clone();
        let connection = input
            .connect(
                &port,
                "djinn-clock-in",
                move |_, bytes, _| {
                    let Some(message) = ClockMessage::parse(bytes) else {
                        return;
                    };
                    // NOTE: stamped on JACK's clock, not midir's, so the mixer can place
                    // it against the period's own start.
                    // SAFETY: jack_get_time reads JACK's clock; it takes no client and
                    // touches no memory of ours.
                    let usecs = unsafe { jack_sys::jack_get_time() };
                    if let Ok(mut producer) = shared.lock() {
                        let _ = producer.push(StampedClock { usecs, message });
                    }
                },
                (),
            )
            .map_err(|e| e.to_string())?;
        Ok((
            AlsaClock {
                _connection: connection,
                producer,
                port: name,
            },
            consumer,
        ))
    }

    /// A fresh queue for a new mixer; messages go there from now on.
    pub fn renew(&self) -> Consumer<StampedClock> {
        let (producer, consumer) = clock_feed();
        if let Ok(mut slot) = self.producer.lock() {
            *slot = producer;
        }
        consumer
    }
}
