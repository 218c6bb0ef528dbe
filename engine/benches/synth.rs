//! The generator, the analysis and the render chain: an 8-bar loop, a 30 s song, loudness
//! (the ebur128 crate and djinn's own fast meter), tempo and chroma on 30 s of generated
//! music, and that music through the render chain. The headline
//! figure, a 180 s song against fluidsynth, is in `clients/python/bench_render.py`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use djinn_engine::analysis::{chroma, describe, key, loudness, quality, tempo};
use djinn_engine::profile::ProfileSet;
use djinn_engine::synth::{Recipe, Role, render_loop, render_song};

const RATE: u32 = 48_000;

fn recipe() -> Recipe {
    let profiles = ProfileSet::built_in();
    let mut recipe = Recipe::from_profile(profiles.get("deep_house").expect("shipped profile"));
    // Four roles, as in the render target.
    recipe.parts.retain(|i| i.role() != Role::Fx);
    recipe
}

fn generation(c: &mut Criterion) {
    let recipe = recipe();
    let mut group = c.benchmark_group("synth");
    group.sample_size(10);
    group.bench_function("render_loop 8 bars, four roles", |b| {
        b.iter(|| black_box(render_loop(&recipe, 8, 7, RATE).expect("renders")))
    });
    group.bench_function("render_song 30 s, four roles", |b| {
        b.iter(|| black_box(render_song(&recipe, 30.0, 8, 7, RATE, &mut |_| {}).expect("renders")))
    });
    group.finish();
}

fn analysis(c: &mut Criterion) {
    let song = render_song(&recipe(), 30.0, 8, 7, RATE, &mut |_| {})
        .expect("renders")
        .frames;
    let mut group = c.benchmark_group("analysis 30 s");
    group.sample_size(10);
    group.bench_function("loudness::measure (ebur128 crate)", |b| {
        b.iter(|| black_box(loudness::measure(&song, RATE).expect("measures")))
    });
    group.bench_function("loudness::measure_fast", |b| {
        b.iter(|| black_box(loudness::measure_fast(&song, RATE)))
    });
    group.bench_function("tempo::estimate", |b| {
        b.iter(|| black_box(tempo::estimate_music(&song, RATE)))
    });
    group.bench_function("chroma::chroma", |b| {
        b.iter(|| black_box(chroma::chroma(&song, RATE)))
    });
    group.bench_function("key::estimate", |b| {
        b.iter(|| black_box(key::estimate(&song, RATE)))
    });
    let mono = djinn_engine::analysis::mono(&song);
    group.bench_function("describe::tempo_and_key, mono, two threads", |b| {
        b.iter(|| black_box(describe::tempo_and_key(&mono, RATE)))
    });
    let target = quality::Target {
        lufs: -9.0,
        ceiling_dbtp: -1.0,
    };
    group.bench_function("quality::assess", |b| {
        b.iter(|| black_box(quality::assess(&song, RATE, target).expect("assesses")))
    });
    group.finish();
}

/// The render chain on 30 s of music: offline as `djinn render` runs it (chain, then the
/// master stage to a loudness target), and live, one 64-frame period.
fn chain(c: &mut Criterion) {
    use djinn_engine::chain::{self, Chain, ChainSettings};
    let song = render_song(&recipe(), 30.0, 8, 7, RATE, &mut |_| {})
        .expect("renders")
        .frames;
    // What the shipped render script chooses for "loud clean modern mix".
    let loud = ChainSettings {
        tilt_db: 1.0,
        low_cut_hz: 25.0,
        compress: 0.35,
        target_lufs: Some(-9.0),
        ..ChainSettings::default()
    };
    let mut group = c.benchmark_group("chain");
    group.sample_size(10);
    group.bench_function("render 30 s, loud clean modern mix", |b| {
        b.iter(|| black_box(chain::render(&song, RATE, &loud, &mut |_| {}).expect("renders")))
    });
    let mut live = Chain::live(&loud, RATE);
    let period = &song[..64];
    group.bench_function("live Chain::process, 64 frames", |b| {
        b.iter(|| {
            for f in period {
                black_box(live.process(*f));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, generation, analysis, chain);
criterion_main!(benches);
