//! Analysis accuracy on real instrument audio: 24 fluidsynth recordings of a small band
//! across 70–175 BPM, in major and minor keys, on four chord instruments.

use std::path::{Path, PathBuf};

use djinn_tests::{Note, band_midi, fluidsynth, kit_bar};

const NOTES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];

struct Case {
    file: PathBuf,
    bpm: f64,
    key: String,
}

/// 24 renders: tempi from 70 to 175 BPM, every tonic once in major and once in minor, and
/// piano, electric piano, strings and nylon guitar on the chords.
fn corpus(dir: &Path) -> Vec<Case> {
    let programs = [0u8, 4, 48, 24];
    let cases: Vec<(f64, u8, bool, u8)> = (0..24u32)
        .map(|i| {
            let bpm = 70.0 + 105.0 * f64::from(i) / 23.0;
            let tonic = ((i * 7) % 12) as u8;
            let minor = i % 2 == 1;
            (
                (bpm * 10.0).round() / 10.0,
                tonic,
                minor,
                programs[i as usize % 4],
            )
        })
        .collect();
    let make = |&(bpm, tonic, minor, program): &(f64, u8, bool, u8)| {
        let name = format!(
            "{}-{}-{bpm}",
            NOTES[tonic as usize],
            if minor { "minor" } else { "major" }
        );
        let (mid, wav) = (
            dir.join(format!("{name}.mid")),
            dir.join(format!("{name}.wav")),
        );
        // About 20 s whatever the tempo.
        let bars = ((bpm / 12.0).round() as u32).max(4);
        band_midi(&mid, bpm, tonic, minor, bars, program);
        fluidsynth(&mid, &wav);
        Case {
            file: wav,
            bpm,
            key: format!(
                "{} {}",
                NOTES[tonic as usize],
                if minor { "minor" } else { "major" }
            ),
        }
    };
    let (first, second) = cases.split_at(cases.len() / 2);
    std::thread::scope(|s| {
        let a = s.spawn(|| first.iter().map(make).collect::<Vec<_>>());
        let mut out: Vec<Case> = second.iter().map(make).collect();
        let mut head = a.join().unwrap();
        head.append(&mut out);
        head
    })
}

#[test]
fn tempo_and_key_accuracy_on_24_fluidsynth_renders() {
    let dir = tempfile::tempdir().unwrap();
    let cases = corpus(dir.path());
    let (mut tempo_ok, mut key_ok) = (0, 0);
    for case in &cases {
        let audio = djinn_engine::decode::read(&case.file).unwrap();
        let tempo = djinn_engine::analysis::tempo::estimate_music(&audio.frames, audio.sample_rate);
        let key = djinn_engine::analysis::key::estimate(&audio.frames, audio.sample_rate);
        let bpm = tempo.map_or(0.0, |t| t.bpm);
        let found = key.map(|k| k.key.to_string()).unwrap_or_default();
        let t = (bpm - case.bpm).abs() <= 1.0;
        let k = found == case.key;
        // Beats: every one found lands within 25 ms of the score's beat grid, and none is
        // missed.
        let period = 60.0 / case.bpm;
        let beats =
            djinn_engine::analysis::tempo::beat_times(&audio.frames, audio.sample_rate, bpm);
        let off: Vec<f64> = beats
            .iter()
            .map(|b| (b - (b / period).round() * period).abs())
            .collect();
        let worst = off.iter().copied().fold(0.0, f64::max);
        // The score's beats; fluidsynth adds a release tail after them.
        let expected = f64::from(((case.bpm / 12.0).round() as u32).max(4) * 4);
        if t {
            assert!(
                worst < 0.025,
                "{}: a beat {worst:.3} s off the grid",
                case.key
            );
            assert!(
                (beats.len() as f64 - expected).abs() <= 1.0,
                "{}: {} beats for {expected}",
                case.key,
                beats.len()
            );
        }
        tempo_ok += usize::from(t);
        key_ok += usize::from(k);
        eprintln!(
            "{:>6.1} BPM {:<9} → {:>6.1} {} {:<9} {}",
            case.bpm,
            case.key,
            bpm,
            if t { "ok" } else { "XX" },
            found,
            if k { "ok" } else { "XX" }
        );
    }
    let n = cases.len();
    eprintln!("tempo {tempo_ok}/{n}, key {key_ok}/{n}");
    assert!(tempo_ok * 10 >= n * 9, "tempo {tempo_ok}/{n} within 1 BPM");
    assert!(key_ok * 10 >= n * 8, "key {key_ok}/{n} exactly right");
}

/// One part alone, 16 bars at 110 BPM in A minor, rendered with fluidsynth.
fn part(dir: &Path, role: &str) -> PathBuf {
    let bars = 16u32;
    let mut notes = Vec::new();
    let scale = [57u8, 59, 60, 62, 64, 65, 67, 69];
    let chords: [[u8; 3]; 4] = [[57, 60, 64], [53, 57, 60], [55, 59, 62], [52, 56, 59]];
    for bar in 0..bars {
        let start = f64::from(bar) * 4.0;
        let chord = chords[bar as usize % 4];
        match role {
            "drums" => kit_bar(&mut notes, start),
            "bass" => {
                for beat in [0.0, 1.5, 2.0, 3.0] {
                    let key = chord[0] - 24;
                    notes.push(Note {
                        channel: 1,
                        program: 33,
                        key,
                        beat: start + beat,
                        beats: 0.45,
                    });
                }
            }
            "pad" => {
                for key in chord {
                    notes.push(Note {
                        channel: 2,
                        program: 89,
                        key,
                        beat: start,
                        beats: 3.95,
                    });
                }
            }
            "lead" => {
                for eighth in 0..8 {
                    let key = scale[(bar as usize * 3 + eighth * 5) % 8] + 12;
                    let beat = start + f64::from(eighth as u32) * 0.5;
                    notes.push(Note {
                        channel: 3,
                        program: 80,
                        key,
                        beat,
                        beats: 0.45,
                    });
                }
            }
            "vocal" => {
                for half in 0..2 {
                    let key = scale[(bar as usize * 2 + half * 3) % 8];
                    let beat = start + f64::from(half as u32) * 2.0;
                    notes.push(Note {
                        channel: 4,
                        program: 53,
                        key,
                        beat,
                        beats: 1.95,
                    });
                }
            }
            _ => {}
        }
    }
    let (mid, wav) = (
        dir.join(format!("{role}.mid")),
        dir.join(format!("{role}.wav")),
    );
    if role == "full_mix" {
        band_midi(&mid, 110.0, 9, true, bars, 0);
    } else {
        djinn_tests::write_midi(&mid, 110.0, &notes);
    }
    fluidsynth(&mid, &wav);
    wav
}

#[test]
fn the_role_of_a_part_is_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for role in ["drums", "bass", "pad", "lead", "vocal", "full_mix"] {
        let audio = djinn_engine::decode::read(&part(dir.path(), role)).unwrap();
        let d = djinn_engine::analysis::describe::describe(&audio.frames, audio.sample_rate);
        eprintln!(
            "{role:9} → {:9} {:.2}  {:?} {:?}",
            d.role.role, d.role.confidence, d.bands, d.spectral
        );
        if d.role.role != role {
            wrong.push(format!("{role} read as {}", d.role.role));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

#[test]
fn several_files_are_analysed_in_their_order_and_a_bad_one_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let take = |name: &str, bpm: f64, tonic: u8| {
        let (mid, wav) = (
            dir.path().join(format!("{name}.mid")),
            dir.path().join(format!("{name}.wav")),
        );
        band_midi(&mid, bpm, tonic, false, 8, 0);
        fluidsynth(&mid, &wav);
        wav
    };
    let (slow, fast) = (take("slow", 92.0, 0), take("fast", 138.0, 7));
    let bad = dir.path().join("bad.wav");
    std::fs::write(&bad, b"RIFF, but not audio").unwrap();
    let out = std::process::Command::new(djinn_tests::bin("djinn"))
        .args(["--json", "analyze", "--tempo-key"])
        .args([&slow, &bad, &fast])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a bad file fails the command");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.wav"), "{stderr}");
    assert!(stderr.contains("1 of 3 files"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one JSON line for each good file");
    for (line, (file, bpm)) in lines.iter().zip([(&slow, 92.0), (&fast, 138.0)]) {
        assert_eq!(line["file"], serde_json::json!(file));
        let found = line["tempo"]["bpm"].as_f64().unwrap();
        assert!(
            (found - bpm).abs() <= 1.0,
            "{file:?}: {found} BPM for {bpm}"
        );
    }
}
