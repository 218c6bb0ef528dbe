//! Making decisions and carrying them out: calling the script, rendering the loops it asked
//! for, sending launches that name their bar, and scheduling the steps of transitions.

use std::sync::Arc;
use std::time::Instant;

use rhai::Dynamic;
use serde_json::{Value, json};

use djinn_engine::analysis::bands::{BandShares, band_shares};
use djinn_engine::mix::{Group, LayerParams, MasterFx, Quantize};
use djinn_engine::profile::Profile;
use djinn_engine::synth::{Instrument, Role, render_loop};
use djinn_engine::transport::{Transport, TransportChange};

use super::plan::LoopFile;
use super::plan::{self, FxPatch, Planned, Transition, When, role_gain};
use super::script::{self, Decision};
use super::state::{self, StateInput};
use super::{
    DecisionRecord, Director, DirectorError, KEEP_DECISIONS, KEEP_TIMINGS, KEEP_VOICE, Kind,
    LEAD_BARS, SetLayer, Step, StepKind,
};
use crate::audio::{
    AddLayer, AudioStatus, GetFx, LayerPatch, ListLayers, RemoveLayer, ReplaceLayer, SetFx,
    SetLayer as SetAudioLayer,
};
use crate::generator::Interpret;
use crate::profiles::{ProfileSnapshot, SetProfile};
use crate::scripting::{Record, ScriptError};
use crate::transport::SetTransport;

/// How finely a filter sweep moves, in beats.
const SWEEP_STEP_BEATS: f64 = 0.5;
/// High-pass cutoffs a sweep runs between, Hz.
const SWEEP_HZ: (f32, f32) = (20.0, 1500.0);

fn loop_seed(set_seed: u64, phrase: u64, role: Role, salt: u64) -> u64 {
    let mut x =
        set_seed ^ phrase.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((role as u64) << 56) ^ salt;
    // splitmix64 finaliser: nearby inputs give unrelated seeds.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) & 0x001f_ffff_ffff_ffff
}

/// A loop rendered for the set.
struct Loop {
    frames: Arc<[[f32; 2]]>,
    instrument: String,
    bands: BandShares,
    render_ms: f64,
}

/// One layer action to render and send.
/// Library loops offered to the DJ script per role.
const LOOPS_PER_ROLE: usize = 16;

struct LayerJob {
    role: Role,
    prompt: String,
    /// Play this file (fitted to the set) instead of generating.
    file: Option<LoopFile>,
    bars: u32,
    gain: Option<f32>,
    when: When,
    replace: bool,
    crossfade_beats: Option<f32>,
    seed: u64,
}

impl Director {
    fn sandbox_call(
        &self,
        function: &str,
        state: Dynamic,
        request: &str,
    ) -> Result<Dynamic, ScriptError> {
        let ast = &self.script.ast;
        let name = &self.script.name;
        if function == "on_command" {
            self.sandbox.call(
                name,
                ast,
                function,
                (state, Dynamic::from(request.to_owned())),
            )
        } else {
            self.sandbox.call(name, ast, function, (state,))
        }
    }

    /// Calls the script and reads its decision. A call that fails (or returns something
    /// that is not a decision) counts against the running version; when [`Record`] says it
    /// should go, the last version that worked (or the built-in script for the style) takes
    /// over and is asked instead, so the set goes on.
    fn call_script(&mut self, kind: Kind, state: Value, request: &str) -> Option<Decision> {
        let state = match rhai::serde::to_dynamic(&state) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "script state not built");
                return None;
            }
        };
        for _attempt in 0..2 {
            let function = kind.entry(&self.script.ast);
            let started = Instant::now();
            let result = self
                .sandbox_call(function, state.clone(), request)
                .map_err(|e| (e, Some(started.elapsed().as_secs_f64() * 1000.0)))
                .and_then(|value| {
                    super::script::decision(value).map_err(|message| {
                        let error = ScriptError::Runtime {
                            script: self.script.name.clone(),
                            function: function.into(),
                            line: 0,
                            message,
                        };
                        (error, None)
                    })
                });
            let (error, ran_ms) = match result {
                Ok(decision) => {
                    self.record.succeeded();
                    return Some(decision);
                }
                Err(failed) => failed,
            };
            self.script_error(&error, ran_ms);
            if !self.record.failed() {
                return None;
            }
            let fallback = match self.last_good.take() {
                Some(previous) => previous,
                None if self.script.path.is_some() => {
                    match script::locate(None, &self.script_style)
                        .and_then(|source| source.compile(&self.sandbox))
                    {
                        Ok(built_in) => built_in,
                        Err(e) => {
                            tracing::error!(error = %e, "no built-in DJ script to fall back to");
                            return None;
                        }
                    }
                }
                None => return None,
            };
            tracing::warn!(script = %fallback.name, from = %self.script.name, "falling back to the last DJ script that worked");
            self.events().publish(
                "script",
                json!({
                    "kind": "reverted",
                    "script": fallback.name,
                    "from": self.script.name,
                    "error": error.to_string(),
                }),
            );
            self.script = fallback;
            self.record = Record::proven();
        }
        None
    }

    /// Forgets layers that left the mix without the director (layer.remove, a restart).
    async fn refresh_layers(&mut self) {
        let Ok(list) = self.args.audio.ask(ListLayers).await else {
            return;
        };
        if let Some(set) = self.set.as_mut() {
            set.layers
                .retain(|_, layer| list.0.iter().any(|l| l.id == layer.id));
        }
    }

    /// Decides and carries out one decision.
    pub(super) async fn decide(
        &mut self,
        kind: Kind,
        cue: Instant,
        request: Option<String>,
    ) -> Result<(), DirectorError> {
        let snapshot = self.snapshot().await?;
        self.refresh_layers().await;
        let transport = self.args.transport_watch.borrow().clone();
        let request = request.unwrap_or_default();
        let set = self.set.as_ref().ok_or(DirectorError::NotPlaying)?;
        let bar_now = transport.position().bar.saturating_sub(1);
        let (at_bar, when) = match kind {
            Kind::Start | Kind::Phrase => (set.next_boundary, When::Phrase),
            Kind::Now | Kind::Command => (bar_now + 1, When::Bar),
        };
        let stems: Vec<&'static str> = self.stems.iter().map(|r| r.name()).collect();
        let loops = self.library_loops(&transport).await;
        let state = state::build(&StateInput {
            kind: kind.name(),
            set,
            at_bar,
            transport: &transport,
            profile: &snapshot.active,
            stems,
            decisions: &self.decisions,
            request: &request,
            ratings: self.ratings.summary(),
            loops,
        });
        let playing = set.layers.keys().copied().collect();
        let decision = self.call_script(kind, state, &request).unwrap_or_default();
        let mut context = plan::Context {
            profile: &snapshot.active,
            profiles: &snapshot.set,
            playing,
            stems: &self.stems,
        };
        let (mut planned, rejected) = plan::check(decision.actions, &mut context, when);
        match kind {
            Kind::Start | Kind::Phrase => planned.append(&mut self.pending),
            // Commands act at the next bar; tempo, key and style changes (which re-render
            // everything) wait for a phrase boundary.
            Kind::Now | Kind::Command => {
                let (now, later): (Vec<Planned>, Vec<Planned>) =
                    planned.into_iter().partition(|p| {
                        !matches!(
                            p,
                            Planned::Tempo { .. } | Planned::Key { .. } | Planned::Style { .. }
                        )
                    });
                self.pending.extend(later);
                planned = now;
            }
        }
        let decide_ms = cue.elapsed().as_secs_f64() * 1000.0;
        self.timings.push_back(decide_ms);
        while self.timings.len() > KEEP_TIMINGS {
            self.timings.pop_front();
        }
        for r in &rejected {
            self.events().publish(
                "script",
                json!({ "kind": "rejected", "script": self.script.name, "action": r.action,
                        "index": r.index, "reason": r.reason }),
            );
        }
        // Phrases follow the profile: a new style's length from its first boundary, and an
        // edited profile's from the next.
        let phrase_bars = planned
            .iter()
            .find_map(|p| match p {
                Planned::Style { style } => snapshot.set.get(style),
                _ => None,
            })
            .unwrap_or(&snapshot.active)
            .phrase_bars
            .max(1);
        let performing = Instant::now();
        let actions = self
            .perform(planned, at_bar, kind, cue, &snapshot, &transport)
            .await;
        let perform_ms = performing.elapsed().as_secs_f64() * 1000.0;
        let Some(set) = self.set.as_mut() else {
            return Err(DirectorError::NotPlaying);
        };
        let phrase = set.phrase;
        if matches!(kind, Kind::Start | Kind::Phrase) {
            set.phrase_bars = phrase_bars;
            set.next_boundary = at_bar + u64::from(set.phrase_bars);
        }
        set.phrase += 1;
        set.energy_curve.push_back(set.energy);
        while set.energy_curve.len() > 64 {
            set.energy_curve.pop_front();
        }
        let record = DecisionRecord {
            phrase,
            bar: at_bar + 1,
            kind: kind.name(),
            script: self.script.name.clone(),
            reason: decision.reason,
            actions,
            rejected,
            decide_ms,
            perform_ms,
            time: std::time::SystemTime::now(),
        };
        tracing::info!(phrase, bar = at_bar + 1, kind = kind.name(), reason = %record.reason,
            actions = record.actions.len(), decide_ms, perform_ms, "decision");
        self.events().publish(
            "decision",
            serde_json::to_value(&record).unwrap_or(Value::Null),
        );
        self.decisions.push_back(record);
        while self.decisions.len() > KEEP_DECISIONS {
            self.decisions.pop_front();
        }
        Ok(())
    }

    /// The library's loops that fit the set: within 6 % of its tempo, in a key with its
    /// notes (any key for drums), at most [`LOOPS_PER_ROLE`] per role, as `#{ path, bpm,
    /// key, bars, prompt, brightness }` under the DJ's role names (`drum`, `bass`, `pad`,
    /// `lead`; vocals count as leads).
    async fn library_loops(&self, transport: &Transport) -> Value {
        let Some(library) = &self.args.library else {
            return json!({});
        };
        let tempo = transport.tempo;
        // Loops in the set's key first, then in the other key with its notes (its relative
        // major or minor; for a modal set, its parent major and that key's relative minor):
        // either plays in the set without a clash.
        let keyed_keys = transport.key.with_its_notes().map(|k| Some(k.to_string()));
        let mut out = serde_json::Map::new();
        for (dj_role, roles, keyed) in [
            ("drum", &["drums"][..], false),
            ("bass", &["bass"][..], true),
            ("pad", &["pad"][..], true),
            ("lead", &["lead", "vocal"][..], true),
        ] {
            let mut found = Vec::new();
            let keys = if keyed { &keyed_keys[..] } else { &[None] };
            for key in keys {
                for role in roles {
                    let query = crate::library::Query {
                        bpm: Some([tempo / 1.06, tempo * 1.06]),
                        key: key.clone(),
                        role: Some((*role).to_owned()),
                        text: None,
                        limit: Some(LOOPS_PER_ROLE),
                    };
                    if let Ok(entries) = library.ask(crate::library::Search(query)).await {
                        found.extend(entries.into_iter().map(|e| {
                            json!({ "path": e.path, "bpm": e.bpm, "key": e.key, "bars": e.bars,
                                    "prompt": e.prompt, "brightness": e.brightness })
                        }));
                    }
                }
            }
            found.truncate(LOOPS_PER_ROLE);
            out.insert(dj_role.to_owned(), Value::Array(found));
        }
        Value::Object(out)
    }

    async fn render(
        &self,
        job: &LayerJob,
        target: &Transport,
        energy: f64,
        snapshot: &ProfileSnapshot,
        rate: u32,
    ) -> Result<Loop, String> {
        if let Some(file) = &job.file {
            let (file, target, bars) = (file.clone(), target.clone(), job.bars);
            let started = Instant::now();
            let frames = tokio::task::spawn_blocking(move || fit_file(&file, &target, bars, rate))
                .await
                .map_err(|e| e.to_string())??;
            let bands = band_shares(&frames, rate);
            return Ok(Loop {
                frames: frames.into(),
                instrument: "file".into(),
                bands,
                render_ms: started.elapsed().as_secs_f64() * 1000.0,
            });
        }
        let interpretation = self
            .args
            .generator
            .ask(Interpret {
                prompt: job.prompt.clone(),
                profile: snapshot.active.clone(),
                profiles: snapshot.set.clone(),
            })
            .await
            .map_err(|e| format!("the mood script failed: {e}"))?;
        let mut recipe = interpretation.recipe.only(job.role);
        recipe.tempo = target.tempo;
        recipe.key = target.key;
        recipe.meter = target.meter;
        recipe.intensity = (0.5 * recipe.intensity + 0.5 * energy as f32).clamp(0.0, 1.0);
        let instrument = recipe
            .parts
            .first()
            .map_or("", |i: &Instrument| i.name())
            .to_owned();
        let (bars, seed) = (job.bars, job.seed);
        let started = Instant::now();
        let (frames, bands) = tokio::task::spawn_blocking(move || {
            render_loop(&recipe, bars, seed, rate).map(|r| {
                let bands = band_shares(&r.frames, rate);
                (r.frames, bands)
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(Loop {
            frames: frames.into(),
            instrument,
            bands,
            render_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Renders and sends what `planned` asks, for `at_bar`; returns what was done.
    async fn perform(
        &mut self,
        planned: Vec<Planned>,
        at_bar: u64,
        kind: Kind,
        cue: Instant,
        snapshot: &ProfileSnapshot,
        transport: &Transport,
    ) -> Vec<Value> {
        let per_bar = f64::from(transport.meter.beats_per_bar.max(1));
        let at_beat = at_bar as f64 * per_bar;
        let mut done = Vec::new();
        let rate = match self.args.audio.ask(AudioStatus).await {
            Ok(status) => status.sample_rate,
            Err(e) => {
                tracing::warn!(error = %e, "audio actor did not answer; nothing performed");
                return done;
            }
        };
        let fx_now = self
            .args
            .audio
            .ask(GetFx)
            .await
            .map(|f| f.0)
            .unwrap_or_default();

        // Transport: the tempo, key and style the phrase plays in.
        let mut tempo = None;
        let mut key = None;
        let mut style: Option<&Profile> = None;
        let mut transitions = Vec::new();
        let mut jobs = Vec::new();
        let mut removes = Vec::new();
        let mut steps = Vec::new();
        let Some(set) = self.set.as_mut() else {
            return done;
        };
        let phrase_bars = set.phrase_bars;
        for p in &planned {
            match p {
                Planned::Tempo { bpm, ramp_phrases } if *ramp_phrases > 1 => {
                    set.tempo_ramp = Some((*bpm, *ramp_phrases));
                }
                Planned::Tempo { bpm, .. } => {
                    tempo = Some(*bpm);
                    set.tempo_ramp = None;
                }
                Planned::Key { key: k } => key = Some(*k),
                Planned::Style { style: s } => style = snapshot.set.get(s),
                Planned::Transition { kind: t, bars } => transitions.push((*t, *bars)),
                Planned::Energy { target } => set.energy = *target,
                _ => {}
            }
        }
        if tempo.is_none()
            && matches!(kind, Kind::Start | Kind::Phrase)
            && let Some((goal, left)) = set.tempo_ramp
        {
            let step = transport.tempo + (goal - transport.tempo) / f64::from(left.max(1));
            tempo = Some((step * 100.0).round() / 100.0);
            set.tempo_ramp = (left > 1).then_some((goal, left - 1));
        }
        let mut target = transport.clone();
        if let Some(profile) = style {
            target.tempo = profile.tempo.default;
            target.key = profile.key;
            target.meter = profile.meter;
        }
        target.tempo = tempo.unwrap_or(target.tempo);
        target.key = key.unwrap_or(target.key);
        let moves = target.tempo != transport.tempo || target.key != transport.key;
        if moves || style.is_some() {
            steps.push(Step {
                beat: at_beat,
                what: StepKind::Transport {
                    tempo: (target.tempo != transport.tempo || style.is_some())
                        .then_some(target.tempo),
                    key: (target.key != transport.key || style.is_some()).then_some(target.key),
                    style: style.map(|p| p.name.clone()),
                },
            });
        }

        let crossfade = transitions
            .iter()
            .find(|(t, _)| *t == Transition::Crossfade)
            .map(|(_, bars)| *bars as f32 * per_bar as f32);
        let mut touched = std::collections::BTreeSet::new();
        for (salt, p) in planned.iter().enumerate() {
            match p {
                Planned::Add {
                    role,
                    prompt,
                    bars,
                    gain,
                    when,
                    file,
                }
                | Planned::Replace {
                    role,
                    prompt,
                    bars,
                    gain,
                    when,
                    file,
                    ..
                } => {
                    touched.insert(*role);
                    let replace = matches!(p, Planned::Replace { .. });
                    let crossfade_beats = match p {
                        Planned::Replace {
                            crossfade_beats, ..
                        } => crossfade_beats.or(crossfade),
                        _ => None,
                    };
                    jobs.push(LayerJob {
                        role: *role,
                        prompt: prompt.clone(),
                        file: file.clone(),
                        bars: *bars,
                        gain: *gain,
                        when: *when,
                        replace,
                        crossfade_beats,
                        seed: loop_seed(set.seed, set.phrase, *role, salt as u64),
                    });
                }
                Planned::Remove { role, when } => {
                    touched.insert(*role);
                    removes.push((*role, *when));
                }
                Planned::SetLayer { role, patch } => steps.push(Step {
                    beat: at_beat,
                    what: StepKind::Layer(*role, *patch),
                }),
                Planned::Fx { patch } => steps.push(Step {
                    beat: at_beat,
                    what: StepKind::Fx(*patch),
                }),
                Planned::Say { text } => {
                    self.voice_queue.push_back(text.clone());
                    while self.voice_queue.len() > KEEP_VOICE {
                        self.voice_queue.pop_front();
                    }
                    self.args.health.events().publish(
                        "voice",
                        json!({ "kind": "queued", "text": text, "bar": at_bar + 1 }),
                    );
                    done.push(json!({ "action": "say", "text": text, "queued": true }));
                }
                _ => {}
            }
        }
        // A breakdown takes drums and bass out.
        for (t, _) in &transitions {
            if *t == Transition::Breakdown {
                for role in [Role::Drum, Role::Bass] {
                    if set.layers.contains_key(&role) && touched.insert(role) {
                        removes.push((role, When::Phrase));
                    }
                }
            }
        }
        // Loops made at another tempo or key (this change, or a transport.set or
        // profile.set from outside the set) are re-rendered for the boundary.
        let mut retuned = false;
        if matches!(kind, Kind::Start | Kind::Phrase) {
            for layer in set.layers.values() {
                let stale = layer.tempo != target.tempo || layer.key != target.key;
                if stale && touched.insert(layer.role) {
                    retuned = true;
                    jobs.push(LayerJob {
                        role: layer.role,
                        prompt: layer.prompt.clone(),
                        file: layer.file.clone(),
                        bars: layer.bars,
                        gain: None,
                        when: When::Phrase,
                        replace: true,
                        crossfade_beats: Some(0.25),
                        seed: layer.seed,
                    });
                }
            }
        }

        // Transitions around the boundary.
        let next_boundary_beat = (at_bar + u64::from(phrase_bars)) as f64 * per_bar;
        let removed_ids: Vec<u64> = removes
            .iter()
            .filter_map(|(role, _)| set.layers.get(role).map(|l| l.id))
            .collect();
        for (t, bars) in &transitions {
            let span = f64::from(*bars) * per_bar;
            match t {
                Transition::FilterSweep => {
                    let n = (span / SWEEP_STEP_BEATS).ceil().max(1.0) as usize;
                    for i in 0..=n {
                        let x = i as f32 / n as f32;
                        let hz = SWEEP_HZ.0 * (SWEEP_HZ.1 / SWEEP_HZ.0).powf(x);
                        steps.push(Step {
                            beat: at_beat + span * f64::from(x),
                            what: StepKind::Sweep(hz),
                        });
                    }
                    steps.push(Step {
                        beat: next_boundary_beat,
                        what: StepKind::OpenFilters,
                    });
                }
                Transition::EchoOut => {
                    let from = at_beat - span;
                    steps.push(Step {
                        beat: from,
                        what: StepKind::Echo(removed_ids.clone(), 1.0),
                    });
                    steps.push(Step {
                        beat: from,
                        what: StepKind::Fx(FxPatch {
                            delay_feedback: Some(fx_now.delay_feedback.max(0.7)),
                            delay_mix: Some(fx_now.delay_mix.max(0.5)),
                            ..FxPatch::default()
                        }),
                    });
                    steps.push(Step {
                        beat: at_beat + 2.0 * per_bar,
                        what: StepKind::Fx(FxPatch {
                            delay_feedback: Some(fx_now.delay_feedback),
                            delay_mix: Some(fx_now.delay_mix),
                            ..FxPatch::default()
                        }),
                    });
                }
                Transition::Crossfade => {}
                Transition::Drop => {
                    steps.push(Step {
                        beat: at_beat,
                        what: StepKind::OpenFilters,
                    });
                    jobs.push(LayerJob {
                        role: Role::Fx,
                        prompt: "impact".into(),
                        file: None,
                        bars: 1,
                        gain: Some(role_gain(Role::Fx)),
                        when: When::Phrase,
                        replace: false,
                        crossfade_beats: None,
                        seed: loop_seed(set.seed, set.phrase, Role::Fx, 99),
                    });
                }
                Transition::Breakdown => {
                    steps.push(Step {
                        beat: at_beat,
                        what: StepKind::Fx(FxPatch {
                            reverb_mix: Some((fx_now.reverb_mix + 0.2).min(1.0)),
                            ..FxPatch::default()
                        }),
                    });
                    steps.push(Step {
                        beat: next_boundary_beat,
                        what: StepKind::Fx(FxPatch {
                            reverb_mix: Some(fx_now.reverb_mix),
                            ..FxPatch::default()
                        }),
                    });
                }
            }
        }
        let drop_hit = transitions.iter().any(|(t, _)| *t == Transition::Drop);

        // Removals first: they free the role for an add in the same decision.
        for (role, when) in removes {
            let Some(layer) = self.set.as_mut().and_then(|s| s.layers.remove(&role)) else {
                continue;
            };
            let at = match when {
                When::Phrase => Quantize::AtBar(at_bar),
                When::Bar => Quantize::Bar,
            };
            let result = self.args.audio.ask(RemoveLayer { id: layer.id, at }).await;
            done.push(json!({ "action": "remove", "role": role, "layer": layer.id,
                              "error": result.err().map(|e| e.to_string()) }));
        }

        let energy = self.set.as_ref().map_or(0.5, |s| s.energy);
        let cue_beat = at_bar.saturating_sub(u64::from(LEAD_BARS)) as f64 * per_bar;
        for job in jobs {
            let one_shot = drop_hit && job.role == Role::Fx && job.prompt == "impact";
            let rendered = self.render(&job, &target, energy, snapshot, rate).await;
            let mut entry = json!({
                "action": if one_shot { "impact" } else if job.replace { "replace" } else { "add" },
                "role": job.role,
                "prompt": job.prompt,
                "bars": job.bars,
            });
            let rendered = match rendered {
                Ok(r) => r,
                Err(e) => {
                    entry["error"] = json!(e);
                    done.push(entry);
                    continue;
                }
            };
            if kind == Kind::Phrase && job.when == When::Phrase {
                // Time to spare at realtime pace: what the cue left, less what this took.
                let spent = cue.elapsed().as_secs_f64() * target.tempo / 60.0;
                let lead = (at_beat - cue_beat - spent) / per_bar;
                if let Some(set) = self.set.as_mut() {
                    set.loops += 1;
                    set.min_lead_bars = Some(set.min_lead_bars.map_or(lead, |m| m.min(lead)));
                }
                entry["lead_bars"] = json!((lead * 100.0).round() / 100.0);
            }
            entry["instrument"] = json!(rendered.instrument);
            entry["render_ms"] = json!((rendered.render_ms * 10.0).round() / 10.0);
            let at = match job.when {
                When::Phrase => Quantize::AtBar(at_bar),
                When::Bar => Quantize::Bar,
            };
            let started_bar = match job.when {
                When::Phrase => at_bar,
                When::Bar => transport.position().bar,
            };
            let source = format!("dj {}: {}", job.role, job.prompt);
            let existing = self
                .set
                .as_ref()
                .and_then(|s| s.layers.get(&job.role))
                .map(|l| (l.id, l.gain));
            let result = match (one_shot, job.replace, existing) {
                (false, true, Some((id, old_gain))) => {
                    let reply = self
                        .args
                        .audio
                        .ask(ReplaceLayer {
                            id,
                            frames: rendered.frames.clone(),
                            at,
                            crossfade_beats: job.crossfade_beats.unwrap_or(per_bar as f32 / 4.0),
                            source,
                            reservation: None,
                        })
                        .await;
                    let gain = job.gain.unwrap_or(old_gain);
                    if gain != old_gain {
                        steps.push(Step {
                            beat: at_beat,
                            what: StepKind::Layer(
                                job.role,
                                LayerPatch {
                                    gain: Some(gain),
                                    ..LayerPatch::default()
                                },
                            ),
                        });
                    }
                    reply.map(|info| (info.id, gain)).map_err(|e| e.to_string())
                }
                _ => {
                    let gain = job.gain.unwrap_or_else(|| role_gain(job.role));
                    self.args
                        .audio
                        .ask(AddLayer {
                            frames: rendered.frames.clone(),
                            looped: !one_shot,
                            group: Group::for_role(job.role),
                            params: LayerParams {
                                gain,
                                ..LayerParams::default()
                            },
                            at,
                            source,
                            reservation: None,
                        })
                        .await
                        .map(|info| (info.id, gain))
                        .map_err(|e| e.to_string())
                }
            };
            match result {
                Ok((id, gain)) => {
                    entry["layer"] = json!(id);
                    if !one_shot && let Some(set) = self.set.as_mut() {
                        set.layers.insert(
                            job.role,
                            SetLayer {
                                id,
                                role: job.role,
                                prompt: job.prompt.clone(),
                                instrument: rendered.instrument.clone(),
                                bars: job.bars,
                                started_bar,
                                gain,
                                bands: rendered.bands,
                                seed: job.seed,
                                tempo: target.tempo,
                                key: target.key,
                                file: job.file.clone(),
                            },
                        );
                    }
                }
                Err(e) => entry["error"] = json!(e),
            }
            done.push(entry);
        }
        for p in &planned {
            match p {
                Planned::Add { .. }
                | Planned::Replace { .. }
                | Planned::Remove { .. }
                | Planned::Say { .. } => {}
                other => done.push(serde_json::to_value(other).unwrap_or(Value::Null)),
            }
        }
        if retuned {
            done.push(json!({ "action": "retune", "tempo": target.tempo, "key": target.key }));
        }
        if let Some(set) = self.set.as_mut() {
            set.steps.extend(steps);
            set.steps.sort_by(|a, b| a.beat.total_cmp(&b.beat));
        }
        done
    }

    /// Carries out one step.
    pub(super) async fn fire(&mut self, step: Step) {
        let Some(set) = self.set.as_ref() else {
            return;
        };
        let mut patches: Vec<(u64, LayerPatch)> = Vec::new();
        match step.what {
            StepKind::Layer(role, patch) => {
                if let Some(layer) = set.layers.get(&role) {
                    patches.push((layer.id, patch));
                }
            }
            StepKind::Sweep(hz) => {
                for layer in set.layers.values().filter(|l| l.role != Role::Drum) {
                    patches.push((
                        layer.id,
                        LayerPatch {
                            filter: Some(djinn_engine::dsp::FilterMode::HighPass),
                            cutoff_hz: Some(hz),
                            ..LayerPatch::default()
                        },
                    ));
                }
            }
            StepKind::OpenFilters => {
                for layer in set.layers.values() {
                    patches.push((
                        layer.id,
                        LayerPatch {
                            filter: Some(djinn_engine::dsp::FilterMode::Off),
                            ..LayerPatch::default()
                        },
                    ));
                }
            }
            StepKind::Echo(ids, send) => {
                for id in ids {
                    patches.push((
                        id,
                        LayerPatch {
                            delay_send: Some(send),
                            ..LayerPatch::default()
                        },
                    ));
                }
            }
            StepKind::Fx(patch) => {
                let fx: MasterFx = match self.args.audio.ask(GetFx).await {
                    Ok(f) => f.0,
                    Err(_) => return,
                };
                if let Err(e) = self.args.audio.ask(SetFx(patch.apply(fx))).await {
                    tracing::warn!(error = %e, "effect change not applied");
                }
            }
            StepKind::Transport { tempo, key, style } => {
                if let Some(style) = &style {
                    match self
                        .args
                        .profiles
                        .ask(SetProfile {
                            name: style.clone(),
                        })
                        .await
                    {
                        Ok(_) => {
                            self.load_script(style);
                        }
                        Err(e) => tracing::warn!(error = %e, "style not changed"),
                    }
                }
                let change = TransportChange {
                    tempo,
                    meter: None,
                    key: key.map(|k| k.to_string()),
                    scale: None,
                };
                let source = "dj".to_owned();
                if let Err(e) = self
                    .args
                    .transport
                    .ask(SetTransport { change, source })
                    .await
                {
                    tracing::warn!(error = %e, "transport not changed");
                }
            }
        }
        for (id, patch) in patches {
            if let Err(e) = self.args.audio.ask(SetAudioLayer { id, patch }).await {
                tracing::debug!(error = %e, id, "layer step skipped");
            }
        }
    }

    /// Applies tempo, key and style changes at once (no set is playing).
    pub(super) async fn apply_now(&mut self, changes: Vec<Planned>) -> Result<(), DirectorError> {
        let mut change = TransportChange::default();
        for p in changes {
            match p {
                Planned::Style { style } => {
                    self.args
                        .profiles
                        .ask(SetProfile {
                            name: style.clone(),
                        })
                        .await
                        .map_err(|e| DirectorError::Invalid {
                            field: "style",
                            message: e.to_string(),
                        })?;
                    self.load_script(&style);
                }
                Planned::Tempo { bpm, .. } => change.tempo = Some(bpm),
                Planned::Key { key } => change.key = Some(key.to_string()),
                _ => {}
            }
        }
        if change != TransportChange::default() {
            let source = "dj.set".to_owned();
            self.args
                .transport
                .ask(SetTransport { change, source })
                .await
                .map_err(|e| DirectorError::Unavailable(format!("transport: {e}")))?;
        }
        Ok(())
    }
}

/// A loop file made ready for the set: decoded at the session rate, stretched from its own
/// tempo (given, or detected) to the set's and transposed to the set's key (when its own is
/// known) with Rubber Band, then cut or padded to exactly `bars` bars so it loops on the grid.
fn fit_file(
    file: &LoopFile,
    target: &Transport,
    bars: u32,
    rate: u32,
) -> Result<Vec<[f32; 2]>, String> {
    let name = file.path.display().to_string();
    let frames = djinn_engine::decode::read_at(&file.path, rate).map_err(|e| e.to_string())?;
    let from_bpm = match file.bpm {
        Some(bpm) => bpm,
        None => {
            djinn_engine::analysis::tempo::estimate_music(&frames, rate)
                .ok_or_else(|| format!("{name}: no steady tempo found; give its bpm"))?
                .bpm
        }
    };
    let semitones = file.key.map_or(0, |key| {
        djinn_engine::stretch::nearest_transposition(key, target.key)
    });
    let mut out = if (from_bpm - target.tempo).abs() < 1e-6 && semitones == 0 {
        frames
    } else {
        let settings =
            djinn_engine::stretch::Stretch::tempo(from_bpm, target.tempo, f64::from(semitones));
        djinn_engine::stretch::stretch(&frames, rate, settings, |_| {})
            .map_err(|e| format!("{name}: {e}"))?
    };
    let bar_frames = 60.0 / target.tempo * f64::from(target.meter.beats_per_bar) * f64::from(rate);
    let want = (f64::from(bars) * bar_frames).round() as usize;
    out.resize(want, [0.0; 2]);
    Ok(out)
}
