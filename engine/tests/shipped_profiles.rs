//! The profiles shipped in `profiles/` all load, and they are distinct styles.

use std::collections::HashSet;
use std::path::PathBuf;

use djinn_engine::profile::{ProfileSet, ROLES};

fn shipped() -> ProfileSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let (set, errors) = ProfileSet::load(&[dir]);
    assert!(
        errors.is_empty(),
        "shipped profiles failed to load: {errors:#?}"
    );
    set
}

#[test]
fn every_style_the_daemon_promises_is_shipped_with_its_tempo() {
    let set = shipped();
    let expected = [
        ("techno_minimal", 126.0),
        ("experimental", 130.0),
        ("rock", 120.0),
        ("hip_hop", 90.0),
        ("jungle_dnb", 174.0),
        ("dub", 70.0),
        ("deep_house", 124.0),
        ("downtempo_ambient", 85.0),
        ("classical", 110.0),
        ("trip_hop", 95.0),
        ("uk_drill", 142.0),
        ("sleep", 55.0),
        ("meditation", 60.0),
    ];
    for (name, tempo) in expected {
        let profile = set.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(profile.tempo.default, tempo, "{name}");
        for role in ROLES {
            assert!(!profile.palette[role].is_empty(), "{name} {role}");
        }
        assert!(profile.loudness.true_peak_dbtp <= -1.0, "{name}: ceiling");
        assert!(profile.mood.len() >= 4, "{name}: mood words");
    }
    assert_eq!(set.len(), expected.len());
    let built_in = ProfileSet::built_in();
    assert_eq!(
        built_in.iter().map(|p| &p.name).collect::<Vec<_>>(),
        set.iter().map(|p| &p.name).collect::<Vec<_>>(),
        "every shipped file is compiled in"
    );
}

#[test]
fn no_two_profiles_are_copies() {
    let set = shipped();
    let mut palettes = HashSet::new();
    let mut settings = HashSet::new();
    for profile in set.iter() {
        assert!(
            palettes.insert(format!("{:?}", profile.palette)),
            "{} repeats another palette",
            profile.name
        );
        assert!(
            settings.insert(format!(
                "{} {} {:?} {:?}",
                profile.tempo.default, profile.key, profile.effects, profile.loudness
            )),
            "{} repeats another profile's settings",
            profile.name
        );
    }
    // Quiet styles are quieter than club styles.
    let lufs = |n: &str| set.get(n).unwrap().loudness.target_lufs;
    assert!(lufs("sleep") < lufs("downtempo_ambient"));
    assert!(lufs("downtempo_ambient") < lufs("techno_minimal"));
}
