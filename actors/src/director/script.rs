//! The DJ script: where it is loaded from, the functions it may call, and what it returns.
//!
//! A DJ script defines `on_phrase(state)` and may define `on_start(state)` and
//! `on_command(state, text)`. Each returns a decision: a map `#{ reason, actions }` (or
//! `decide(reason, actions)`), a bare array of actions, or `()` for "no change". Actions are
//! built with the constructors registered here (`add`, `replace`, `remove`, `set_layer`,
//! `fx`, `tempo`, `key`, `style`, `transition`, `say`, `energy`); docs/scripting.md
//! documents each with an example.

use std::path::{Path, PathBuf};

use rhai::{AST, Array, Dynamic, Engine, ImmutableString, Map};
use serde::Deserialize;

use crate::scripting::{Sandbox, ScriptError, ScriptLimits};

/// The DJ scripts built into djinn, by style; `default` plays any style without its own.
pub const BUILT_IN: [(&str, &str); 5] = [
    ("default", include_str!("../../../scripts/dj/default.rhai")),
    (
        "techno_minimal",
        include_str!("../../../scripts/dj/techno_minimal.rhai"),
    ),
    (
        "jungle_dnb",
        include_str!("../../../scripts/dj/jungle_dnb.rhai"),
    ),
    (
        "downtempo_ambient",
        include_str!("../../../scripts/dj/downtempo_ambient.rhai"),
    ),
    ("hip_hop", include_str!("../../../scripts/dj/hip_hop.rhai")),
];

/// Limits of DJ script calls: a runaway call is stopped well inside 50 ms.
pub fn limits() -> ScriptLimits {
    ScriptLimits {
        max_operations: 1_000_000,
        budget: std::time::Duration::from_millis(30),
        ..ScriptLimits::default()
    }
}

fn action(name: &str) -> Map {
    let mut map = Map::new();
    map.insert("action".into(), name.into());
    map
}

fn with(mut map: Map, options: Map) -> Map {
    for (k, v) in options {
        map.insert(k, v);
    }
    map
}

fn layer_action(name: &str, role: ImmutableString, prompt: ImmutableString) -> Map {
    let mut map = action(name);
    map.insert("role".into(), role.into());
    map.insert("prompt".into(), prompt.into());
    map
}

/// Registers the action constructors and small helpers the DJ API offers.
pub fn register_api(engine: &mut Engine) {
    engine
        .register_fn("add", |role: ImmutableString, prompt: ImmutableString| {
            layer_action("add", role, prompt)
        })
        .register_fn(
            "add",
            |role: ImmutableString, prompt: ImmutableString, options: Map| {
                with(layer_action("add", role, prompt), options)
            },
        )
        .register_fn(
            "replace",
            |role: ImmutableString, prompt: ImmutableString| layer_action("replace", role, prompt),
        )
        .register_fn(
            "replace",
            |role: ImmutableString, prompt: ImmutableString, options: Map| {
                with(layer_action("replace", role, prompt), options)
            },
        )
        .register_fn("remove", |role: ImmutableString| {
            let mut map = action("remove");
            map.insert("role".into(), role.into());
            map
        })
        .register_fn("remove", |role: ImmutableString, options: Map| {
            let mut map = action("remove");
            map.insert("role".into(), role.into());
            with(map, options)
        })
        .register_fn("set_layer", |role: ImmutableString, settings: Map| {
            let mut map = action("set_layer");
            map.insert("role".into(), role.into());
            with(map, settings)
        })
        .register_fn("fx", |settings: Map| with(action("fx"), settings))
        .register_fn("tempo", |bpm: f64| {
            let mut map = action("tempo");
            map.insert("bpm".into(), bpm.into());
            map
        })
        .register_fn("tempo", |bpm: i64| {
            let mut map = action("tempo");
            map.insert("bpm".into(), (bpm as f64).into());
            map
        })
        .register_fn("tempo", |bpm: f64, ramp_phrases: i64| {
            let mut map = action("tempo");
            map.insert("bpm".into(), bpm.into());
            map.insert("ramp_phrases".into(), ramp_phrases.into());
            map
        })
        .register_fn("tempo", |bpm: i64, ramp_phrases: i64| {
            let mut map = action("tempo");
            map.insert("bpm".into(), (bpm as f64).into());
            map.insert("ramp_phrases".into(), ramp_phrases.into());
            map
        })
        .register_fn("key", |key: ImmutableString| {
            let mut map = action("key");
            map.insert("key".into(), key.into());
            map
        })
        .register_fn("style", |style: ImmutableString| {
            let mut map = action("style");
            map.insert("style".into(), style.into());
            map
        })
        .register_fn("transition", |kind: ImmutableString| {
            let mut map = action("transition");
            map.insert("kind".into(), kind.into());
            map
        })
        .register_fn("transition", |kind: ImmutableString, bars: i64| {
            let mut map = action("transition");
            map.insert("kind".into(), kind.into());
            map.insert("bars".into(), bars.into());
            map
        })
        .register_fn("say", |text: ImmutableString| {
            let mut map = action("say");
            map.insert("text".into(), text.into());
            map
        })
        .register_fn("energy", |target: f64| {
            let mut map = action("energy");
            map.insert("target".into(), target.into());
            map
        })
        .register_fn("energy", |target: i64| {
            let mut map = action("energy");
            map.insert("target".into(), (target as f64).into());
            map
        })
        .register_fn("decide", |reason: ImmutableString, actions: Array| {
            let mut map = Map::new();
            map.insert("reason".into(), reason.into());
            map.insert("actions".into(), actions.into());
            map
        })
        // Picks from a list by a number that grows (a phrase index), wrapping around.
        .register_fn("pick", |list: Array, n: i64| -> Dynamic {
            if list.is_empty() {
                return Dynamic::UNIT;
            }
            let len = list.len() as i64;
            list.into_iter()
                .nth(n.rem_euclid(len) as usize)
                .unwrap_or(Dynamic::UNIT)
        });
}

/// One action as a script returns it, before validation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScriptAction {
    Add {
        role: String,
        prompt: String,
        bars: Option<i64>,
        gain: Option<f64>,
        quantize: Option<String>,
        /// A file to play instead of generating (a loop from `state.loops`).
        file: Option<String>,
        /// The file's own tempo and key, when known.
        bpm: Option<f64>,
        key: Option<String>,
    },
    Replace {
        role: String,
        prompt: String,
        bars: Option<i64>,
        gain: Option<f64>,
        quantize: Option<String>,
        crossfade_beats: Option<f64>,
        file: Option<String>,
        bpm: Option<f64>,
        key: Option<String>,
    },
    Remove {
        role: String,
        quantize: Option<String>,
    },
    SetLayer {
        role: String,
        gain: Option<f64>,
        pan: Option<f64>,
        filter: Option<String>,
        cutoff_hz: Option<f64>,
        resonance: Option<f64>,
        reverb_send: Option<f64>,
        delay_send: Option<f64>,
    },
    Fx {
        reverb_mix: Option<f64>,
        reverb_size: Option<f64>,
        delay_beats: Option<f64>,
        delay_feedback: Option<f64>,
        delay_mix: Option<f64>,
    },
    Tempo {
        bpm: f64,
        ramp_phrases: Option<i64>,
    },
    Key {
        key: String,
    },
    Style {
        style: String,
    },
    Transition {
        kind: String,
        bars: Option<i64>,
    },
    Say {
        text: String,
    },
    Energy {
        target: f64,
    },
}

impl ScriptAction {
    /// The constructor's name, as the script wrote it.
    pub fn name(&self) -> &'static str {
        match self {
            ScriptAction::Add { .. } => "add",
            ScriptAction::Replace { .. } => "replace",
            ScriptAction::Remove { .. } => "remove",
            ScriptAction::SetLayer { .. } => "set_layer",
            ScriptAction::Fx { .. } => "fx",
            ScriptAction::Tempo { .. } => "tempo",
            ScriptAction::Key { .. } => "key",
            ScriptAction::Style { .. } => "style",
            ScriptAction::Transition { .. } => "transition",
            ScriptAction::Say { .. } => "say",
            ScriptAction::Energy { .. } => "energy",
        }
    }
}

/// What a script call returned: a reason and the actions (each parsed, or the reason it
/// could not be).
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub reason: String,
    pub actions: Vec<Result<ScriptAction, String>>,
}

fn parse_action(value: Dynamic) -> Result<ScriptAction, String> {
    let shown = value.to_string();
    rhai::serde::from_dynamic::<ScriptAction>(&value).map_err(|e| {
        let message = e.to_string();
        // serde names the variant it failed on; keep the script's own words first.
        format!("{shown}: {message}")
    })
}

/// Reads a decision from what a script returned.
pub fn decision(value: Dynamic) -> Result<Decision, String> {
    if value.is_unit() {
        return Ok(Decision::default());
    }
    if value.is_array() {
        let actions = value
            .cast::<Array>()
            .into_iter()
            .map(parse_action)
            .collect();
        return Ok(Decision {
            reason: String::new(),
            actions,
        });
    }
    if value.is_map() {
        let mut map = value.cast::<Map>();
        if map.contains_key("action") {
            return Ok(Decision {
                reason: String::new(),
                actions: vec![parse_action(Dynamic::from_map(map))],
            });
        }
        let reason = map
            .remove("reason")
            .map(|r| r.to_string())
            .unwrap_or_default();
        let actions = match map.remove("actions") {
            None => Vec::new(),
            Some(a) if a.is_unit() => Vec::new(),
            Some(a) if a.is_array() => a.cast::<Array>().into_iter().map(parse_action).collect(),
            Some(a) => vec![parse_action(a)],
        };
        if let Some(extra) = map.keys().next() {
            return Err(format!(
                "a decision has `reason` and `actions`; it also had `{extra}`"
            ));
        }
        return Ok(Decision { reason, actions });
    }
    Err(format!(
        "expected a decision (#{{ reason, actions }}), an array of actions or (); got {}",
        value.type_name()
    ))
}

/// A compiled DJ script and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedScript {
    /// The file, or `built-in dj/NAME.rhai`.
    pub name: String,
    pub path: Option<PathBuf>,
    pub ast: AST,
}

/// The script for `style`: `dj/STYLE.rhai`, else `dj/default.rhai`, first in `dir`, then
/// built in.
pub fn locate(dir: Option<&Path>, style: &str) -> Result<LoadedScriptSource, ScriptError> {
    if let Some(dir) = dir {
        for stem in [style, "default"] {
            let path = dir.join("dj").join(format!("{stem}.rhai"));
            if path.is_file() {
                let source = std::fs::read_to_string(&path).map_err(|e| ScriptError::Read {
                    script: path.display().to_string(),
                    message: e.to_string(),
                })?;
                return Ok(LoadedScriptSource {
                    name: path.display().to_string(),
                    path: Some(path),
                    source,
                });
            }
        }
    }
    let (stem, source) = BUILT_IN
        .iter()
        .find(|(name, _)| *name == style)
        .or_else(|| BUILT_IN.first())
        .copied()
        .unwrap_or(("default", ""));
    Ok(LoadedScriptSource {
        name: format!("built-in dj/{stem}.rhai"),
        path: None,
        source: source.to_owned(),
    })
}

/// A script's text, before compiling.
#[derive(Debug, Clone)]
pub struct LoadedScriptSource {
    pub name: String,
    pub path: Option<PathBuf>,
    pub source: String,
}

impl LoadedScriptSource {
    /// Compiles it; a script without `on_phrase(state)` is refused.
    pub fn compile(self, sandbox: &Sandbox) -> Result<LoadedScript, ScriptError> {
        let ast = sandbox.compile(&self.name, &self.source)?;
        if !Sandbox::has_function(&ast, "on_phrase", 1) {
            return Err(ScriptError::Compile {
                script: self.name,
                line: 0,
                message: "a DJ script must define fn on_phrase(state)".into(),
            });
        }
        Ok(LoadedScript {
            name: self.name,
            path: self.path,
            ast,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox::with_api(limits(), register_api)
    }

    #[test]
    fn every_built_in_script_compiles_and_decides() {
        let sandbox = sandbox();
        for (name, source) in BUILT_IN {
            let script = LoadedScriptSource {
                name: name.into(),
                path: None,
                source: source.into(),
            }
            .compile(&sandbox)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(Sandbox::has_function(&script.ast, "on_start", 1), "{name}");
            assert!(
                Sandbox::has_function(&script.ast, "on_command", 2),
                "{name}"
            );
        }
    }

    #[test]
    fn constructors_build_the_actions_they_name() {
        let sandbox = sandbox();
        let ast = sandbox
            .compile(
                "t",
                r#"fn on_phrase(state) {
                    decide("because", [
                        add("bass", "rolling sub", #{ bars: 8, gain: 0.8 }),
                        remove("lead"),
                        tempo(128, 2),
                        transition("filter_sweep", 8),
                        say("hello"),
                        energy(0.7),
                        fx(#{ reverb_mix: 0.3 }),
                    ])
                }"#,
            )
            .unwrap();
        let value = sandbox
            .call("t", &ast, "on_phrase", (Dynamic::UNIT,))
            .unwrap();
        let d = decision(value).unwrap();
        assert_eq!(d.reason, "because");
        let actions: Vec<ScriptAction> = d.actions.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            actions[0],
            ScriptAction::Add {
                role: "bass".into(),
                prompt: "rolling sub".into(),
                bars: Some(8),
                gain: Some(0.8),
                quantize: None,
                file: None,
                bpm: None,
                key: None,
            }
        );
        assert_eq!(
            actions[2],
            ScriptAction::Tempo {
                bpm: 128.0,
                ramp_phrases: Some(2)
            }
        );
        assert_eq!(actions.len(), 7);
    }

    #[test]
    fn a_malformed_action_is_reported_not_dropped() {
        let d = decision(
            rhai::Engine::new()
                .eval::<Dynamic>(r#"[#{ action: "add", role: "bass" }, #{ action: "dance" }]"#)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(d.actions.len(), 2);
        assert!(d.actions[0].as_ref().unwrap_err().contains("prompt"));
        assert!(d.actions[1].as_ref().unwrap_err().contains("dance"));
        assert!(decision(Dynamic::from(3_i64)).is_err());
    }
}
