//! The transport: tempo, meter, key and the musical position of the playhead.
//!
//! One transport exists per daemon. This module holds its values and the rules for changing
//! them; who drives the playhead (the realtime mixer, an external clock) lives elsewhere.

use serde::{Deserialize, Serialize};

use crate::music::{Key, Meter, PitchClass, Scale};

/// Tempi djinn accepts, in beats per minute.
pub const TEMPO_RANGE: std::ops::RangeInclusive<f64> = 20.0..=300.0;

/// Ticks per beat in reported positions (the common DAW resolution).
pub const TICKS_PER_BEAT: u32 = 960;
/// How near, in beats, a position may fall short of a beat and still count as on it: the
/// hair of tolerance with which launches, stops and the MIDI clock djinn sends all find
/// the frame a beat falls on, so they find the same one.
pub const ON_BEAT: f64 = 1e-9;

/// Where the playhead is, in frames and in bars, beats and ticks (bar and beat count from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub frame: u64,
    pub bar: u64,
    pub beat: u32,
    pub tick: u32,
}

/// The transport's musical settings and playhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transport {
    /// Beats per minute.
    pub tempo: f64,
    pub meter: Meter,
    pub key: Key,
    /// Frames per second of the clock driving the playhead.
    pub sample_rate: u32,
    /// Whether the playhead moves.
    pub rolling: bool,
    /// Playhead in frames since the transport started.
    pub frame: u64,
    /// Playhead in beats since the transport started; kept apart from `frame` so that tempo
    /// changes move the musical position at the tempo in force at the time.
    beats: f64,
}

/// A change to some of the transport's settings; fields left out keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransportChange {
    pub tempo: Option<f64>,
    pub meter: Option<Meter>,
    /// A whole key ("F minor"), or just a tonic when `scale` is given too.
    pub key: Option<String>,
    pub scale: Option<Scale>,
}

/// Why a transport change was refused. Each names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The tempo is outside [`TEMPO_RANGE`] or not a finite number.
    #[error("{0} BPM is out of range: djinn plays from 20 to 300 BPM")]
    Tempo(f64),
    /// The key could not be read.
    #[error("{0}")]
    Key(crate::music::ParseError),
}

impl TransportError {
    /// The request field this error is about.
    pub fn field(&self) -> &'static str {
        match self {
            TransportError::Tempo(_) => "tempo",
            TransportError::Key(_) => "key",
        }
    }
}

impl Default for Transport {
    fn default() -> Self {
        Self::new(
            120.0,
            Meter::FOUR_FOUR,
            Key::new(PitchClass::new(9), Scale::Minor),
            48_000,
        )
    }
}

impl Transport {
    pub fn new(tempo: f64, meter: Meter, key: Key, sample_rate: u32) -> Self {
        Self {
            tempo,
            meter,
            key,
            sample_rate,
            rolling: false,
            frame: 0,
            beats: 0.0,
        }
    }

    /// Applies a change all or nothing: if any field is refused, nothing changes.
    pub fn apply(&mut self, change: &TransportChange) -> Result<(), TransportError> {
        let tempo = match change.tempo {
            Some(tempo) if !(tempo.is_finite() && TEMPO_RANGE.contains(&tempo)) => {
                return Err(TransportError::Tempo(tempo));
            }
            Some(tempo) => tempo,
            None => self.tempo,
        };
        let key = match (&change.key, change.scale) {
            (Some(text), Some(scale)) => {
                // "key": "F", "scale": "dorian" or "key": "F minor", "scale": "dorian":
                // the scale field wins over a scale written in the key.
                let tonic = text.split_whitespace().next().unwrap_or_default();
                let tonic = tonic
                    .parse::<PitchClass>()
                    .or_else(|_| text.parse::<Key>().map(|k| k.tonic))
                    .map_err(TransportError::Key)?;
                Key::new(tonic, scale)
            }
            (Some(text), None) => text.parse::<Key>().map_err(TransportError::Key)?,
            (None, Some(scale)) => Key::new(self.key.tonic, scale),
            (None, None) => self.key,
        };
        self.tempo = tempo;
        self.key = key;
        if let Some(meter) = change.meter {
            self.meter = meter;
        }
        Ok(())
    }

    /// Moves the playhead on by `frames` at the current tempo, if rolling.
    pub fn advance(&mut self, frames: u64) {
        if self.rolling {
            self.frame += frames;
            self.beats += frames as f64 * self.tempo / (60.0 * f64::from(self.sample_rate));
        }
    }

    /// Moves the playhead to where the audio clock says it is.
    pub fn set_position(&mut self, frame: u64, beats: f64, rolling: bool) {
        self.frame = frame;
        self.beats = beats;
        self.rolling = rolling;
    }

    /// The playhead in beats since the transport started.
    pub fn beats(&self) -> f64 {
        self.beats
    }

    /// The playhead in bars, beats and ticks.
    pub fn position(&self) -> Position {
        let beats_per_bar = u64::from(self.meter.beats_per_bar);
        let whole_beats = self.beats.floor() as u64;
        let tick = ((self.beats - self.beats.floor()) * f64::from(TICKS_PER_BEAT)) as u32;
        Position {
            frame: self.frame,
            bar: whole_beats / beats_per_bar + 1,
            beat: (whole_beats % beats_per_bar) as u32 + 1,
            tick: tick.min(TICKS_PER_BEAT - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempo_outside_the_range_is_refused_and_names_the_field() {
        let mut transport = Transport::default();
        for bad in [19.9, 300.1, f64::NAN, f64::INFINITY, -5.0] {
            let change = TransportChange {
                tempo: Some(bad),
                key: Some("F minor".into()),
                ..Default::default()
            };
            let err = transport.apply(&change).unwrap_err();
            assert_eq!(err.field(), "tempo");
        }
        assert_eq!(
            transport,
            Transport::default(),
            "a refused change changes nothing"
        );
        for good in [20.0, 123.4, 300.0] {
            let change = TransportChange {
                tempo: Some(good),
                ..Default::default()
            };
            transport.apply(&change).unwrap();
            assert_eq!(transport.tempo, good);
        }
    }

    #[test]
    fn key_and_scale_combine() {
        let mut transport = Transport::default();
        let change = TransportChange {
            key: Some("F".into()),
            scale: Some(Scale::Dorian),
            ..Default::default()
        };
        transport.apply(&change).unwrap();
        assert_eq!(transport.key.to_string(), "F dorian");
        let change = TransportChange {
            scale: Some(Scale::Major),
            ..Default::default()
        };
        transport.apply(&change).unwrap();
        assert_eq!(transport.key.to_string(), "F major");
        let change = TransportChange {
            key: Some("Q minor".into()),
            ..Default::default()
        };
        assert_eq!(transport.apply(&change).unwrap_err().field(), "key");
    }

    #[test]
    fn position_counts_bars_and_beats_from_one() {
        let mut transport = Transport::default();
        assert_eq!(
            transport.position(),
            Position {
                frame: 0,
                bar: 1,
                beat: 1,
                tick: 0
            }
        );
        transport.advance(48_000);
        assert_eq!(
            transport.position().frame,
            0,
            "a stopped transport does not move"
        );
        transport.rolling = true;
        // 120 BPM at 48 kHz: one beat is 24,000 frames; 4/4 bars are 96,000.
        transport.advance(96_000 + 24_000 + 12_000);
        assert_eq!(
            transport.position(),
            Position {
                frame: 132_000,
                bar: 2,
                beat: 2,
                tick: 480
            }
        );
    }
}
