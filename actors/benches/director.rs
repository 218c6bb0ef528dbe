//! The director's decision path: state built, DJ script called, actions checked, as on
//! every phrase cue (rendering excluded).

use criterion::{Criterion, criterion_group, criterion_main};
use djinn_actors::director::Rehearsal;
use djinn_engine::profile::ProfileSet;

fn decide(c: &mut Criterion) {
    let profiles = ProfileSet::built_in();
    for style in ["deep_house", "techno_minimal", "jungle_dnb"] {
        let mut rehearsal = Rehearsal::new(None, style, profiles.clone()).expect("script");
        // Play into the set first, so the state holds layers and a history.
        for _ in 0..12 {
            rehearsal.step().expect("decision");
        }
        c.bench_function(&format!("director decide {style}"), |b| {
            b.iter(|| rehearsal.step().expect("decision"))
        });
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
