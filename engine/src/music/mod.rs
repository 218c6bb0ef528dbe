//! Music theory the rest of djinn speaks: pitch classes, scales, keys and meters, and (in
//! `harmony`) notes, chords, progressions and voice leading.
//!
//! Plain values with parsing and display, so that a key typed by a user ("F minor", "C#m",
//! "Bb dorian") and a key in a profile or a JSON-RPC request mean the same thing everywhere.

mod harmony;

pub use harmony::{Chord, PROGRESSIONS_MAJOR, PROGRESSIONS_MINOR, PROGRESSIONS_STILL, note_hz};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Spellings used when djinn prints a pitch class. Flats for the black keys most keys in
/// dance music are written in (Bb, Eb, Ab) and sharps for F# and C#.
const NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];

/// One of the twelve pitch classes, 0 = C … 11 = B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PitchClass(u8);

impl PitchClass {
    /// The pitch class `semitones` above C, wrapped into one octave.
    pub fn new(semitones: i32) -> Self {
        Self(semitones.rem_euclid(12) as u8)
    }

    /// Semitones above C, 0–11.
    pub fn semitones(self) -> u8 {
        self.0
    }

    /// The printed name ("C", "F#", "Bb").
    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }
}

impl fmt::Display for PitchClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong reading a note, scale, key or meter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The note name is not A–G with optional sharps or flats.
    #[error("unknown note {0:?}: expected A–G with an optional # or b, like \"F#\" or \"Bb\"")]
    Note(String),
    /// The scale name is none of the scales djinn knows.
    #[error("unknown scale {0:?}: expected one of {names}", names = Scale::NAMES.join(", "))]
    Scale(String),
    /// The key is not a note followed by a scale.
    #[error("unreadable key {0:?}: expected a note and a scale, like \"F minor\" or \"C#m\"")]
    Key(String),
    /// The meter is not N/D with a sensible numerator and a power-of-two denominator.
    #[error("unreadable meter {0:?}: expected beats/unit like \"4/4\", \"3/4\" or \"7/8\"")]
    Meter(String),
}

impl FromStr for PitchClass {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let mut chars = text.chars();
        let base = match chars.next().map(|c| c.to_ascii_uppercase()) {
            Some('C') => 0,
            Some('D') => 2,
            Some('E') => 4,
            Some('F') => 5,
            Some('G') => 7,
            Some('A') => 9,
            Some('B') => 11,
            _ => return Err(ParseError::Note(text.to_owned())),
        };
        let mut offset = 0;
        for c in chars {
            match c {
                '#' | '♯' => offset += 1,
                'b' | '♭' => offset -= 1,
                _ => return Err(ParseError::Note(text.to_owned())),
            }
        }
        Ok(Self::new(base + offset))
    }
}

/// A scale: the set of intervals a key draws its notes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scale {
    /// Ionian.
    Major,
    /// Natural minor, Aeolian.
    Minor,
    Dorian,
    Phrygian,
    Lydian,
    Mixolydian,
    Locrian,
    HarmonicMinor,
    MelodicMinor,
    MajorPentatonic,
    MinorPentatonic,
    Blues,
}

impl Scale {
    /// Every scale, in the order of [`Scale::NAMES`].
    pub const ALL: [Scale; 12] = [
        Scale::Major,
        Scale::Minor,
        Scale::Dorian,
        Scale::Phrygian,
        Scale::Lydian,
        Scale::Mixolydian,
        Scale::Locrian,
        Scale::HarmonicMinor,
        Scale::MelodicMinor,
        Scale::MajorPentatonic,
        Scale::MinorPentatonic,
        Scale::Blues,
    ];

    /// The canonical names, as printed and as accepted in the protocol and profiles.
    pub const NAMES: [&'static str; 12] = [
        "major",
        "minor",
        "dorian",
        "phrygian",
        "lydian",
        "mixolydian",
        "locrian",
        "harmonic_minor",
        "melodic_minor",
        "major_pentatonic",
        "minor_pentatonic",
        "blues",
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        let index = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Self::NAMES[index]
    }

    /// Semitones above the tonic of each degree.
    pub fn intervals(self) -> &'static [u8] {
        match self {
            Scale::Major => &[0, 2, 4, 5, 7, 9, 11],
            Scale::Minor => &[0, 2, 3, 5, 7, 8, 10],
            Scale::Dorian => &[0, 2, 3, 5, 7, 9, 10],
            Scale::Phrygian => &[0, 1, 3, 5, 7, 8, 10],
            Scale::Lydian => &[0, 2, 4, 6, 7, 9, 11],
            Scale::Mixolydian => &[0, 2, 4, 5, 7, 9, 10],
            Scale::Locrian => &[0, 1, 3, 5, 6, 8, 10],
            Scale::HarmonicMinor => &[0, 2, 3, 5, 7, 8, 11],
            Scale::MelodicMinor => &[0, 2, 3, 5, 7, 9, 11],
            Scale::MajorPentatonic => &[0, 2, 4, 7, 9],
            Scale::MinorPentatonic => &[0, 3, 5, 7, 10],
            Scale::Blues => &[0, 3, 5, 6, 7, 10],
        }
    }

    /// Semitones from the tonic up to the tonic of the major scale with the same notes: 3
    /// for minor (A minor's are C major's), 10 for dorian, 0 for major. The scales with a
    /// note outside every major scale are read as the one they are heard against: harmonic
    /// and melodic minor, the minor pentatonic and the blues as the natural minor, the
    /// major pentatonic as major.
    pub fn to_relative_major(self) -> u8 {
        match self {
            Scale::Major | Scale::MajorPentatonic => 0,
            Scale::Minor
            | Scale::HarmonicMinor
            | Scale::MelodicMinor
            | Scale::MinorPentatonic
            | Scale::Blues => 3,
            Scale::Dorian => 10,
            Scale::Phrygian => 8,
            Scale::Lydian => 7,
            Scale::Mixolydian => 5,
            Scale::Locrian => 1,
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scale {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let normal = text.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        let scale = match normal.as_str() {
            "major" | "maj" | "ionian" => Scale::Major,
            "minor" | "min" | "aeolian" | "natural_minor" => Scale::Minor,
            "dorian" => Scale::Dorian,
            "phrygian" => Scale::Phrygian,
            "lydian" => Scale::Lydian,
            "mixolydian" => Scale::Mixolydian,
            "locrian" => Scale::Locrian,
            "harmonic_minor" => Scale::HarmonicMinor,
            "melodic_minor" => Scale::MelodicMinor,
            "major_pentatonic" | "pentatonic" => Scale::MajorPentatonic,
            "minor_pentatonic" => Scale::MinorPentatonic,
            "blues" => Scale::Blues,
            _ => return Err(ParseError::Scale(text.trim().to_owned())),
        };
        Ok(scale)
    }
}

/// A key: a tonic and a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub tonic: PitchClass,
    pub scale: Scale,
}

impl Key {
    pub fn new(tonic: PitchClass, scale: Scale) -> Self {
        Self { tonic, scale }
    }

    /// The tonic of the major key with this key's notes ([`Scale::to_relative_major`]): C
    /// for A minor and for D dorian.
    pub fn relative_major(self) -> PitchClass {
        PitchClass::new(
            i32::from(self.tonic.semitones()) + i32::from(self.scale.to_relative_major()),
        )
    }

    /// The major and the minor key with this key's notes, this key first when it is one of
    /// them: A minor gives A minor and C major; D dorian gives C major and A minor.
    pub fn with_its_notes(self) -> [Key; 2] {
        let major = Key::new(self.relative_major(), Scale::Major);
        let minor = Key::new(
            PitchClass::new(
                i32::from(major.tonic.semitones()) - i32::from(Scale::Minor.to_relative_major()),
            ),
            Scale::Minor,
        );
        if self == minor {
            [minor, major]
        } else {
            [major, minor]
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.tonic, self.scale)
    }
}

impl FromStr for Key {
    type Err = ParseError;

    /// Reads "F minor", "f# dorian", "Bb major", "C#m", "Am" and "E" (major).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (note, scale) = match trimmed.split_once(char::is_whitespace) {
            Some((note, scale)) => (note, scale.trim()),
            None => {
                // Shorthand: a trailing "m" means minor ("Am", "C#m"); a bare note is major.
                match trimmed.strip_suffix('m') {
                    Some(note) if !note.is_empty() => (note, "minor"),
                    _ => (trimmed, "major"),
                }
            }
        };
        let tonic = note
            .parse::<PitchClass>()
            .map_err(|_| ParseError::Key(trimmed.to_owned()))?;
        let scale = scale.parse::<Scale>()?;
        Ok(Self { tonic, scale })
    }
}

/// A time signature: beats per bar and the note value of one beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Meter {
    pub beats_per_bar: u8,
    pub beat_unit: u8,
}

impl Meter {
    /// Four quarter notes to the bar.
    pub const FOUR_FOUR: Meter = Meter {
        beats_per_bar: 4,
        beat_unit: 4,
    };

    /// A meter with 1–32 beats of a power-of-two unit from 1 to 32.
    pub fn new(beats_per_bar: u8, beat_unit: u8) -> Option<Self> {
        let valid =
            (1..=32).contains(&beats_per_bar) && beat_unit.is_power_of_two() && beat_unit <= 32;
        valid.then_some(Self {
            beats_per_bar,
            beat_unit,
        })
    }
}

impl Default for Meter {
    fn default() -> Self {
        Self::FOUR_FOUR
    }
}

impl fmt::Display for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.beats_per_bar, self.beat_unit)
    }
}

impl FromStr for Meter {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::Meter(text.trim().to_owned());
        let (beats, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let beats = beats.trim().parse().map_err(|_| bad())?;
        let unit = unit.trim().parse().map_err(|_| bad())?;
        Meter::new(beats, unit).ok_or_else(bad)
    }
}

/// Serde through the printed form, so keys and meters read the same in TOML and JSON.
macro_rules! serde_via_str {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_via_str!(PitchClass, Scale, Key, Meter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_shares_its_notes_with_its_relative_major() {
        let notes = |tonic: u8, scale: Scale| {
            let mut set: Vec<u8> = scale.intervals().iter().map(|i| (tonic + i) % 12).collect();
            set.sort_unstable();
            set
        };
        // The seven modes of the major scale, which `ALL` lists first.
        for scale in Scale::ALL[..7].iter().copied() {
            for tonic in 0..12 {
                let major = Key::new(PitchClass::new(tonic.into()), scale).relative_major();
                assert_eq!(
                    notes(tonic, scale),
                    notes(major.semitones(), Scale::Major),
                    "{scale} on {tonic}"
                );
            }
        }
        // The others are read against the scale they colour, on the same notes but one.
        for (scale, like) in [
            (Scale::HarmonicMinor, Scale::Minor),
            (Scale::MelodicMinor, Scale::Minor),
            (Scale::MinorPentatonic, Scale::Minor),
            (Scale::Blues, Scale::Minor),
            (Scale::MajorPentatonic, Scale::Major),
        ] {
            assert_eq!(scale.to_relative_major(), like.to_relative_major());
        }
    }

    #[test]
    fn a_key_with_its_notes_is_its_relative_pair() {
        let key = |text: &str| text.parse::<Key>().unwrap();
        assert_eq!(
            key("A minor").with_its_notes(),
            [key("A minor"), key("C major")]
        );
        assert_eq!(
            key("Eb major").with_its_notes(),
            [key("Eb major"), key("C minor")]
        );
        assert_eq!(
            key("D dorian").with_its_notes(),
            [key("C major"), key("A minor")]
        );
        assert_eq!(
            key("F# phrygian").with_its_notes(),
            [key("D major"), key("B minor")]
        );
    }

    #[test]
    fn keys_read_the_way_musicians_write_them() {
        let cases = [
            ("F minor", "F minor"),
            ("f# dorian", "F# dorian"),
            ("Bb major", "Bb major"),
            ("C#m", "C# minor"),
            ("Am", "A minor"),
            ("E", "E major"),
            ("Db harmonic minor", "C# harmonic_minor"),
            ("Cb major", "B major"),
        ];
        for (text, printed) in cases {
            let key: Key = text.parse().unwrap();
            assert_eq!(key.to_string(), printed, "{text}");
        }
    }

    #[test]
    fn nonsense_keys_say_what_is_wrong() {
        assert_eq!(
            "H minor".parse::<Key>(),
            Err(ParseError::Key("H minor".into()))
        );
        assert_eq!(
            "C funky".parse::<Key>(),
            Err(ParseError::Scale("funky".into()))
        );
        assert!("".parse::<Key>().is_err());
    }

    #[test]
    fn every_scale_name_round_trips() {
        for scale in Scale::ALL {
            assert_eq!(scale.name().parse::<Scale>(), Ok(scale));
            assert_eq!(scale.intervals()[0], 0);
            assert!(scale.intervals().windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn meters_accept_common_signatures_only() {
        assert_eq!("7/8".parse::<Meter>().unwrap().to_string(), "7/8");
        assert_eq!(
            " 3 / 4 ".parse::<Meter>().unwrap(),
            Meter::new(3, 4).unwrap()
        );
        for bad in ["4/3", "0/4", "4", "x/4", "33/4", "4/64"] {
            assert!(bad.parse::<Meter>().is_err(), "{bad}");
        }
    }
}
