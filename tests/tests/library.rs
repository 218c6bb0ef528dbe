//! The loop library: `djinn library build` over a folder of good, corrupt and empty files,
//! its re-runs, and `library.build` / `library.search` over ZeroMQ.

use std::path::Path;
use std::process::Command;

use djinn_tests::{Djinnd, Options, band_midi, bin, fluidsynth};
use serde_json::{Value, json};

/// Four band takes in two subfolders (one converted to FLAC), a corrupt WAV, an empty FLAC
/// and a text file.
fn folder(dir: &Path) {
    std::fs::create_dir_all(dir.join("keys/minor")).unwrap();
    for (i, (bpm, tonic, minor)) in [
        (96.0, 2u8, false),
        (124.0, 9, true),
        (140.0, 7, false),
        (172.0, 4, true),
    ]
    .into_iter()
    .enumerate()
    {
        let sub = if minor { "keys/minor" } else { "keys" };
        let (mid, wav) = (
            dir.join(format!("{sub}/take{i}.mid")),
            dir.join(format!("{sub}/take{i}.wav")),
        );
        band_midi(&mid, bpm, tonic, minor, 8, 0);
        fluidsynth(&mid, &wav);
        std::fs::remove_file(&mid).unwrap();
        if i == 3 {
            let flac = wav.with_extension("flac");
            djinn_tests::ffmpeg_convert(&wav, &flac, &[]);
            std::fs::remove_file(&wav).unwrap();
        }
    }
    std::fs::write(
        dir.join("broken.wav"),
        b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk",
    )
    .unwrap();
    std::fs::write(dir.join("keys/empty.flac"), b"").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not audio").unwrap();
}

fn build(dir: &Path, output: &Path) -> (Value, String) {
    let out = Command::new(bin("djinn"))
        .args(["--json", "library", "build"])
        .arg(dir)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "djinn library build failed: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_folder_of_good_corrupt_and_empty_files_gives_a_line_per_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    folder(&loops);
    let output = dir.path().join("labeled_prompts.jsonl");
    let (report, stderr) = build(&loops, &output);

    let entries = lines(&output);
    assert_eq!(entries.len(), 4, "{entries:#?}");
    assert_eq!(report["analysed"], 4);
    assert_eq!(report["skipped"].as_array().unwrap().len(), 2);
    for bad in ["broken.wav", "empty.flac"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("warning") && l.contains(bad)),
            "no warning for {bad}: {stderr}"
        );
    }
    assert!(
        !stderr.contains("notes.txt"),
        "non-audio files are not warned about"
    );
    let expected = [
        ("take0.wav", 96.0, "D major"),
        ("take1.wav", 124.0, "A minor"),
        ("take2.wav", 140.0, "G major"),
        ("take3.flac", 172.0, "E minor"),
    ];
    for (name, bpm, key) in expected {
        let entry = entries
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no line for {name}"));
        for field in [
            "path",
            "duration",
            "bpm",
            "key",
            "scale",
            "loudness",
            "brightness",
            "role",
            "prompt",
        ] {
            assert!(!entry[field].is_null(), "{field} missing: {entry}");
        }
        assert!(
            (entry["bpm"].as_f64().unwrap() - bpm).abs() <= 1.0,
            "{entry}"
        );
        assert_eq!(entry["key"], key, "{entry}");
        assert_eq!(entry["role"], "full_mix", "{entry}");
        let prompt = entry["prompt"].as_str().unwrap();
        assert!(
            prompt.contains(&format!("{bpm:.0} BPM")) && prompt.contains(key),
            "{prompt}"
        );
    }

    // A second run analyses nothing; a changed file and a new one are analysed again.
    let (again, _) = build(&loops, &output);
    assert_eq!(
        (again["analysed"].clone(), again["reused"].clone()),
        (json!(0), json!(4))
    );
    let first = loops.join("keys/take0.wav");
    let copy = loops.join("keys/minor/copy.wav");
    std::fs::copy(loops.join("keys/take2.wav"), &first).unwrap();
    std::fs::copy(loops.join("keys/take2.wav"), &copy).unwrap();
    let (third, _) = build(&loops, &output);
    assert_eq!(
        (third["analysed"].clone(), third["reused"].clone()),
        (json!(2), json!(3))
    );
    let entries = lines(&output);
    assert_eq!(entries.len(), 5);
    let take0 = entries
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with("take0.wav"))
        .unwrap();
    assert_eq!(
        take0["key"], "G major",
        "the changed file was analysed again"
    );
}

#[test]
fn files_that_carry_their_tempo_and_tonic_are_taken_at_their_word() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    std::fs::create_dir_all(&loops).unwrap();
    // Hip hop at 90 BPM: its boom-bap kick and eighth-note hats read as 180 BPM to the
    // onsets alone. djinn writes the tempo and tonic into the file, as ACIDized loops carry
    // them.
    let song = loops.join("hip_hop.wav");
    let out = Command::new(bin("djinn"))
        .args([
            "generate",
            "--json",
            "--profile",
            "hip_hop",
            "--seconds",
            "12",
        ])
        .args(["--seed", "3", "-o"])
        .arg(&song)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recipe"]["tempo"], 90.0);
    let key = report["recipe"]["key"].as_str().unwrap().to_owned();

    let output = dir.path().join("labeled_prompts.jsonl");
    build(&loops, &output);
    let entries = lines(&output);
    let entry = &entries[0];
    assert_eq!(
        (
            &entry["bpm"],
            &entry["bpm_confidence"],
            &entry["tagged"],
            &entry["key"]
        ),
        (&json!(90.0), &json!(1.0), &json!(true), &json!(key)),
        "{entry}"
    );
    assert!(
        entry["prompt"].as_str().unwrap().contains("90 BPM"),
        "{entry}"
    );

    // An entry an older analysis made is made again, though its file has not changed.
    let mut old = entry.clone();
    old.as_object_mut().unwrap().remove("analysis");
    old["bpm"] = json!(180.0);
    std::fs::write(&output, format!("{old}\n")).unwrap();
    let (again, _) = build(&loops, &output);
    assert_eq!(
        (again["analysed"].clone(), again["reused"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(lines(&output)[0]["bpm"], 90.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_build_and_search_over_zeromq() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    folder(&loops);
    let djinnd = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        ..Options::default()
    });
    let mut client = djinnd.client();
    let mut events = djinnd.events(&["library.skipped"]).await;
    let built = client
        .call("library.build", json!({ "dir": loops }))
        .await
        .unwrap();
    assert_eq!(built["entries"], 4, "{built}");
    for _ in 0..2 {
        let (topic, event) = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
            .await
            .expect("a library.skipped event")
            .unwrap();
        assert_eq!(topic, "library.skipped");
        let path = event["data"]["path"].as_str().unwrap();
        assert!(
            path.ends_with("broken.wav") || path.ends_with("empty.flac"),
            "{event}"
        );
    }

    let search = |params: Value| {
        let mut client = djinnd.client();
        async move { client.call("library.search", params).await }
    };
    let found = search(json!({ "bpm": [120, 145] })).await.unwrap();
    let paths: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{found}");
    assert!(
        paths[0].ends_with("take2.wav") && paths[1].ends_with("take1.wav"),
        "{paths:?}"
    );
    let found = search(json!({ "key": "Em", "role": "full_mix" }))
        .await
        .unwrap();
    assert_eq!(found["count"], 1);
    assert!(
        found["results"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("take3.flac")
    );
    let found = search(json!({ "text": "minor 124" })).await.unwrap();
    assert_eq!(found["count"], 1, "{found}");
    let err = search(json!({ "role": "kazoo" })).await.unwrap_err();
    assert!(err.to_string().contains("role"), "{err}");
    let err = search(json!({ "bpm": [140, 120] })).await.unwrap_err();
    assert!(err.to_string().contains("bpm"), "{err}");
}

/// A DJ script that plays the first drum loop the library offers for the set.
const LIBRARY_DJ: &str = r#"
fn on_phrase(state) {
    if state.loops.drum.len() > 0 && !("drum" in state.roles) {
        let l = state.loops.drum[0];
        return decide("a break from the library", [add("drum", l.prompt, #{ file: l.path, bpm: l.bpm, bars: 4 })]);
    }
    decide("hold", [])
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dj_script_plays_a_loop_from_the_library_fitted_to_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    std::fs::create_dir_all(&loops).unwrap();
    // Four bars of kit at 120 BPM.
    let mut notes = Vec::new();
    for bar in 0..4 {
        djinn_tests::kit_bar(&mut notes, f64::from(bar) * 4.0);
    }
    let mid = dir.path().join("kit.mid");
    djinn_tests::write_midi(&mid, 120.0, &notes);
    fluidsynth(&mid, &loops.join("kit-120.wav"));
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(scripts.join("dj")).unwrap();
    std::fs::write(scripts.join("dj/default.rhai"), LIBRARY_DJ).unwrap();

    let djinnd = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec![
            "--fast".into(),
            "--profile".into(),
            "deep_house".into(),
            "--scripts".into(),
            scripts.display().to_string(),
        ],
        ..Options::default()
    });
    let mut client = djinnd.client();
    client
        .call("transport.set", json!({ "tempo": 124 }))
        .await
        .unwrap();
    let built = client
        .call("library.build", json!({ "dir": loops }))
        .await
        .unwrap();
    assert_eq!(built["entries"], 1, "{built}");
    let found = client
        .call("library.search", json!({ "role": "drums" }))
        .await
        .unwrap();
    assert_eq!(found["count"], 1, "the kit reads as drums: {found}");

    let started = client.call("dj.start", json!({ "seed": 3 })).await.unwrap();
    let action = &started["decision"]["actions"][0];
    assert_eq!(action["action"], "add", "{started}");
    assert_eq!(action["instrument"], "file", "{started}");
    assert!(action["error"].is_null(), "{started}");
    let id = action["layer"].clone();
    let layers = client.call("layer.list", Value::Null).await.unwrap();
    let layer = layers["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("layer {id} not in {layers}"));
    // Four bars at 124 BPM, stretched from 120.
    let expected = (4.0 * 4.0 * 60.0 / 124.0 * 48_000.0_f64).round() as u64;
    assert_eq!(layer["frames"], expected, "{layer}");
}
