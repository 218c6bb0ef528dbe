//! The procedural generator, checked the way a producer would listen: every style's loop
//! keeps its tempo, sits in its key, is seamless and meets the loudness contract; seeds are
//! reproducible; songs are exactly as long as asked.

use djinn_engine::analysis::{chroma, loudness, tempo};
use djinn_engine::profile::ProfileSet;
use djinn_engine::synth::{Groove, Recipe, Role, SectionKind, render_loop, render_song};

const RATE: u32 = 48_000;

#[test]
fn songs_with_drums_are_heard_at_their_tempo_with_no_hint() {
    // As `djinn analyze` and the library hear a file, searching 70–180 BPM: a style with
    // drums whose tempo is in that range is heard at it, not at twice or half of it.
    let mut failures = Vec::new();
    for profile in ProfileSet::built_in().iter() {
        let recipe = Recipe::from_profile(profile);
        if recipe.groove == Groove::Ambient || !(70.0..=180.0).contains(&recipe.tempo) {
            continue;
        }
        let song = render_song(&recipe, 30.0, profile.phrase_bars, 3, RATE, &mut |_| {}).unwrap();
        let heard = tempo::estimate_music(&song.frames, RATE).map_or(0.0, |e| e.bpm);
        println!(
            "{:18} heard at {heard:7.2} ({:5.1})",
            profile.name, recipe.tempo
        );
        if (heard - recipe.tempo).abs() > 1.0 {
            failures.push(format!(
                "{}: heard at {heard} for {}",
                profile.name, recipe.tempo
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_profile_loop_keeps_tempo_key_and_loudness() {
    let profiles = ProfileSet::built_in();
    let mut failures = Vec::new();
    for profile in profiles.iter() {
        let recipe = Recipe::from_profile(profile);
        let looped = render_loop(&recipe, 8, 7, RATE).unwrap();
        let name = &profile.name;
        let report = loudness::measure(&looped.frames, RATE).unwrap();

        // Tempo, from onsets, resolved inside the style's range.
        let est = tempo::estimate(
            &looped.frames,
            RATE,
            profile.tempo.min * 0.9,
            profile.tempo.max * 1.1,
        );
        let bpm = est.map(|e| e.bpm).unwrap_or(0.0);
        if (bpm - recipe.tempo).abs() > 1.0 {
            failures.push(format!("{name}: tempo {bpm} for {}", recipe.tempo));
        }

        // Key: its pitch classes carry at least 90 % of the tonal energy (a key two notes
        // away could hold at most the share of the five notes it shares).
        let c = chroma::chroma(&looped.frames, RATE);
        let fit = chroma::in_key(&c, &recipe.key);
        if fit < 0.9 {
            failures.push(format!("{name}: {fit:.2} of chroma in key: {c:.2?}"));
        }

        // Loudness contract.
        if (report.integrated_lufs - recipe.target_lufs).abs() > 1.0 {
            failures.push(format!(
                "{name}: {:.2} LUFS for {}",
                report.integrated_lufs, recipe.target_lufs
            ));
        }
        if report.true_peak_dbtp > recipe.ceiling_dbtp {
            failures.push(format!(
                "{name}: true peak {:.2} over {}",
                report.true_peak_dbtp, recipe.ceiling_dbtp
            ));
        }
        println!(
            "{name:18} {bpm:7.2} bpm ({:5.1})  in key {fit:.2}  {:6.2} LUFS  {:5.2} dBTP",
            recipe.tempo, report.integrated_lufs, report.true_peak_dbtp
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The largest sample-to-sample step across the wrap, and the given quantile of the steps
/// inside the loop.
fn wrap_and_steps(frames: &[[f32; 2]], quantile: f64) -> (f32, f32) {
    let step = |a: [f32; 2], b: [f32; 2]| (b[0] - a[0]).abs().max((b[1] - a[1]).abs());
    let mut steps: Vec<f32> = frames.windows(2).map(|w| step(w[0], w[1])).collect();
    steps.sort_by(f32::total_cmp);
    let at = ((steps.len() - 1) as f64 * quantile).round() as usize;
    (step(frames[frames.len() - 1], frames[0]), steps[at])
}

#[test]
fn loops_are_exact_and_seamless() {
    let profiles = ProfileSet::built_in();
    for name in ["deep_house", "uk_drill", "sleep"] {
        let recipe = Recipe::from_profile(profiles.get(name).unwrap());
        for bars in [1, 4, 8] {
            let frames = render_loop(&recipe, bars, 3, RATE).unwrap().frames;
            let expected =
                (f64::from(bars * 4) * 60.0 / recipe.tempo * f64::from(RATE)).round() as usize;
            assert_eq!(frames.len(), expected, "{name} {bars} bars");
            // The full mix: the wrap jumps no more than the music does anywhere inside.
            let (wrap, largest) = wrap_and_steps(&frames, 1.0);
            assert!(
                wrap <= largest,
                "{name} {bars} bars: wrap step {wrap} vs largest {largest}"
            );
            // Sustained parts ring across the wrap: there it must be as smooth as 999 in
            // 1000 steps inside (a loop that was cut instead of folded jumps here).
            for role in [Role::Pad, Role::Bass] {
                let frames = render_loop(&recipe.only(role), bars, 3, RATE)
                    .unwrap()
                    .frames;
                let (wrap, typical) = wrap_and_steps(&frames, 0.999);
                assert!(
                    wrap <= typical,
                    "{name} {role} {bars} bars: wrap step {wrap} vs typical {typical}"
                );
            }
        }
    }
}

#[test]
fn seeds_are_reproducible_and_distinct() {
    let profiles = ProfileSet::built_in();
    let recipe = Recipe::from_profile(profiles.get("techno_minimal").unwrap());
    let a = render_loop(&recipe, 4, 11, RATE).unwrap().frames;
    let b = render_loop(&recipe, 4, 11, RATE).unwrap().frames;
    let c = render_loop(&recipe, 4, 12, RATE).unwrap().frames;
    assert!(a == b, "same seed, different audio");
    let differing = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(
        differing > a.len() / 2,
        "seeds 11 and 12 differ in only {differing} frames"
    );
}

#[test]
fn single_roles_render_alone() {
    let profiles = ProfileSet::built_in();
    let recipe = Recipe::from_profile(profiles.get("uk_drill").unwrap());
    for role in Role::ALL {
        let looped = render_loop(&recipe.only(role), 4, 5, RATE).unwrap();
        assert!(
            looped.loudness.integrated_lufs.is_finite(),
            "{role} is silent"
        );
        assert!(
            looped.loudness.true_peak_dbtp <= recipe.ceiling_dbtp,
            "{role}"
        );
    }
}

#[test]
fn songs_are_exactly_as_long_as_asked_and_arranged() {
    let profiles = ProfileSet::built_in();
    let profile = profiles.get("deep_house").unwrap();
    let recipe = Recipe::from_profile(profile);
    for seconds in [10.0, 37.3, 180.0] {
        let mut last = 0.0;
        let song = render_song(&recipe, seconds, profile.phrase_bars, 1, RATE, &mut |p| {
            last = p
        })
        .unwrap();
        assert_eq!(
            song.frames.len(),
            (seconds * f64::from(RATE)).round() as usize
        );
        assert_eq!(last, 1.0);
        let report = song.loudness;
        assert!(
            (report.integrated_lufs - recipe.target_lufs).abs() <= 1.0,
            "{seconds}: {report:?}"
        );
        assert!(
            report.true_peak_dbtp <= recipe.ceiling_dbtp,
            "{seconds}: {report:?}"
        );
        if seconds >= 180.0 {
            let kinds: Vec<SectionKind> = song.sections.iter().map(|s| s.kind).collect();
            for kind in [
                SectionKind::Intro,
                SectionKind::Build,
                SectionKind::Drop,
                SectionKind::Breakdown,
                SectionKind::Outro,
            ] {
                assert!(kinds.contains(&kind), "{kinds:?} lacks {kind:?}");
            }
        }
    }
}
