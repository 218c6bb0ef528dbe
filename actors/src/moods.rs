//! Prompts to recipes: the mood script reads a prompt ("UK drill beat, dark 808 slides,
//! sparse piano, 142 bpm") and says which style, tempo, key, instruments and character it
//! asks for; this module checks what the script returned and builds the [`Recipe`].
//!
//! The script is `moods/default.rhai` in the scripts directory when there is one, else the
//! copy built into djinn. Words the script does not understand are reported, never
//! silently dropped. A version that fails when it runs is rolled back to the last one that
//! worked ([`Versions`]).

use std::path::Path;

use rhai::AST;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::events::EventSink;
use crate::scripting::{Record, Sandbox, ScriptError, ScriptLimits};
use djinn_engine::chain::ChainSettings;
use djinn_engine::music::Key;
use djinn_engine::profile::{Profile, ProfileSet};
use djinn_engine::synth::{Groove, Instrument, Recipe};

/// The mood script shipped with djinn.
pub const DEFAULT_SCRIPT: &str = include_str!("../../scripts/moods/default.rhai");
const BUILT_IN_NAME: &str = "built-in moods/default.rhai";

/// What went wrong turning a prompt into a recipe.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoodError {
    /// The script failed.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The script returned a value djinn cannot use; `field` names it.
    #[error("{script}: interpret() returned a bad {field}: {message}")]
    Result {
        script: String,
        field: String,
        message: String,
    },
}

/// A prompt, understood.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interpretation {
    pub prompt: String,
    /// The profile the recipe starts from.
    pub style: String,
    pub recipe: Recipe,
    pub mood: Vec<String>,
    /// Words the script did not understand.
    pub unknown: Vec<String>,
}

/// What `interpret()` may return; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptResult {
    style: Option<String>,
    tempo: Option<f64>,
    tempo_word: Option<String>,
    key: Option<String>,
    groove: Option<String>,
    swing: Option<f64>,
    #[serde(default)]
    parts: Vec<String>,
    intensity: Option<f64>,
    brightness: Option<f64>,
    space: Option<f64>,
    #[serde(default)]
    mood: Vec<String>,
    #[serde(default)]
    unknown: Vec<String>,
}

/// The loaded mood script.
#[derive(Debug)]
pub struct MoodScript {
    sandbox: Sandbox,
    ast: AST,
    name: String,
}

impl MoodScript {
    /// The script built into djinn.
    pub fn built_in() -> MoodScript {
        let sandbox = Sandbox::new(ScriptLimits::default());
        // NOTE: the built-in script is compiled by a unit test, so this cannot fail in a
        // shipped binary; an empty AST would only make every prompt unknown.
        let ast = sandbox
            .compile(BUILT_IN_NAME, DEFAULT_SCRIPT)
            .unwrap_or_default();
        MoodScript {
            sandbox,
            ast,
            name: BUILT_IN_NAME.to_owned(),
        }
    }

    /// `moods/default.rhai` under `scripts_dir` when it exists, else the built-in script.
    pub fn load(scripts_dir: Option<&Path>) -> Result<MoodScript, ScriptError> {
        match scripts_dir.map(|d| d.join("moods").join("default.rhai")) {
            Some(path) if path.exists() => Self::from_file(&path),
            _ => Ok(Self::built_in()),
        }
    }

    pub fn from_file(path: &Path) -> Result<MoodScript, ScriptError> {
        let sandbox = Sandbox::new(ScriptLimits::default());
        let ast = sandbox.compile_file(path)?;
        Ok(MoodScript {
            sandbox,
            ast,
            name: path.display().to_string(),
        })
    }

    /// Where the script came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Turns `prompt` into a recipe, starting from `profile` (or the profile the prompt
    /// names, looked up in `profiles`).
    pub fn interpret(
        &self,
        prompt: &str,
        profile: &Profile,
        profiles: &ProfileSet,
    ) -> Result<Interpretation, MoodError> {
        let profile_map =
            rhai::serde::to_dynamic(profile_view(profile)).map_err(|e| MoodError::Result {
                script: self.name.clone(),
                field: "profile".into(),
                message: e.to_string(),
            })?;
        let returned = self.sandbox.call(
            &self.name,
            &self.ast,
            "interpret",
            (prompt.to_owned(), profile_map),
        )?;
        let bad = |field: &str, message: String| MoodError::Result {
            script: self.name.clone(),
            field: field.to_owned(),
            message,
        };
        let value: Value =
            rhai::serde::from_dynamic(&returned).map_err(|e| bad("result", e.to_string()))?;
        let result: ScriptResult =
            serde_json::from_value(value).map_err(|e| bad("result", e.to_string()))?;

        let base = match &result.style {
            Some(style) => profiles
                .get(style)
                .ok_or_else(|| bad("style", format!("no profile named {style:?}")))?,
            None => profile,
        };
        let mut recipe = Recipe::from_profile(base);
        match (result.tempo, result.tempo_word.as_deref()) {
            (Some(t), _) if !(20.0..=300.0).contains(&t) => {
                return Err(bad("tempo", format!("{t} is outside 20–300 BPM")));
            }
            (Some(t), _) => recipe.tempo = t,
            (None, Some("min")) => recipe.tempo = base.tempo.min,
            (None, Some("max")) => recipe.tempo = base.tempo.max,
            (None, Some(other)) => {
                return Err(bad("tempo_word", format!("{other:?} is not min or max")));
            }
            (None, None) => {}
        }
        if let Some(key) = &result.key {
            recipe.key = key.parse::<Key>().map_err(|e| bad("key", e.to_string()))?;
        }
        if let Some(groove) = &result.groove {
            recipe.groove = groove.parse::<Groove>().map_err(|e| bad("groove", e))?;
        }
        let unit = |field: &str, v: Option<f64>, hi: f64| -> Result<Option<f32>, MoodError> {
            match v {
                Some(x) if !(0.0..=hi).contains(&x) => {
                    Err(bad(field, format!("{x} is outside 0–{hi}")))
                }
                other => Ok(other.map(|x| x as f32)),
            }
        };
        if let Some(s) = unit("swing", result.swing, 0.5)? {
            recipe.swing = s;
        }
        if let Some(x) = unit("intensity", result.intensity, 1.0)? {
            recipe.intensity = x;
        }
        if let Some(x) = unit("brightness", result.brightness, 1.0)? {
            recipe.brightness = x;
        }
        if let Some(x) = unit("space", result.space, 1.0)? {
            recipe.space = x;
        }
        for name in &result.parts {
            let instrument = name.parse::<Instrument>().map_err(|e| bad("parts", e))?;
            recipe.parts.retain(|p| p.role() != instrument.role());
            recipe.parts.push(instrument);
        }
        recipe.parts.sort_by_key(|i| i.role());
        Ok(Interpretation {
            prompt: prompt.to_owned(),
            style: base.name.clone(),
            recipe,
            mood: result.mood,
            unknown: result.unknown,
        })
    }
}

/// A script the generator runs: what [`Versions`] needs to roll it back.
pub trait ScriptVersion: Sized {
    /// Where the script came from (a file, or a built-in name).
    fn name(&self) -> &str;
    /// The copy built into djinn, the last resort.
    fn built_in() -> Self;
    fn is_built_in(&self) -> bool;
}

impl ScriptVersion for MoodScript {
    fn name(&self) -> &str {
        &self.name
    }
    fn built_in() -> Self {
        MoodScript::built_in()
    }
    fn is_built_in(&self) -> bool {
        self.name == BUILT_IN_NAME
    }
}

impl ScriptVersion for ChainScript {
    fn name(&self) -> &str {
        &self.name
    }
    fn built_in() -> Self {
        ChainScript::built_in()
    }
    fn is_built_in(&self) -> bool {
        self.name == RENDER_BUILT_IN_NAME
    }
}

/// The running version of a script and the last one that worked.
///
/// A call that fails is reported; when [`Record`] says the running version should go, the
/// last version that completed a call (or the built-in script) takes its place, a `script`
/// event says so, and the call is made again with it, so the set goes on.
#[derive(Debug)]
pub struct Versions<T> {
    running: T,
    record: Record,
    last_good: Option<T>,
}

impl<T: ScriptVersion> Versions<T> {
    pub fn new(running: T) -> Versions<T> {
        let record = if running.is_built_in() {
            Record::proven()
        } else {
            Record::default()
        };
        Versions {
            running,
            record,
            last_good: None,
        }
    }

    pub fn running(&self) -> &T {
        &self.running
    }

    /// Puts a newly loaded version in; the running one is kept as the last good version if
    /// it ever completed a call.
    pub fn load(&mut self, script: T) {
        let previous = std::mem::replace(&mut self.running, script);
        if self.record.proven {
            self.last_good = Some(previous);
        }
        self.record = if self.running.is_built_in() {
            Record::proven()
        } else {
            Record::default()
        };
    }

    /// Runs `call` with the running version, rolling back once if it fails and should go.
    pub fn run<R>(
        &mut self,
        events: &EventSink,
        report: impl Fn(&MoodError),
        call: impl Fn(&T) -> Result<R, MoodError>,
    ) -> Result<R, MoodError> {
        let error = match call(&self.running) {
            Ok(value) => {
                self.record.succeeded();
                return Ok(value);
            }
            Err(error) => error,
        };
        report(&error);
        if !self.record.failed() {
            return Err(error);
        }
        let fallback = match self.last_good.take() {
            Some(previous) => previous,
            None if !self.running.is_built_in() => T::built_in(),
            None => return Err(error),
        };
        let from = std::mem::replace(&mut self.running, fallback);
        self.record = Record::proven();
        tracing::warn!(script = self.running.name(), from = from.name(), %error, "script rolled back");
        events.publish(
            "script",
            json!({
                "kind": "reverted",
                "script": self.running.name(),
                "from": from.name(),
                "error": error.to_string(),
            }),
        );
        let retried = call(&self.running);
        match &retried {
            Ok(_) => self.record.succeeded(),
            Err(error) => {
                report(error);
                self.record.failed();
            }
        }
        retried
    }
}

/// The render script shipped with djinn.
pub const RENDER_SCRIPT: &str = include_str!("../../scripts/moods/render.rhai");
const RENDER_BUILT_IN_NAME: &str = "built-in moods/render.rhai";

/// A prompt turned into a processing chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainChoice {
    pub prompt: String,
    pub settings: ChainSettings,
    /// The words the script acted on.
    pub words: Vec<String>,
    /// Words the script did not understand.
    pub unknown: Vec<String>,
}

/// The loaded render script: `moods/render.rhai`, which turns a prompt into the chain that
/// `djinn render`, `render.file` and the live effect mode run.
#[derive(Debug)]
pub struct ChainScript {
    sandbox: Sandbox,
    ast: AST,
    name: String,
}

impl ChainScript {
    /// The script built into djinn.
    pub fn built_in() -> ChainScript {
        let sandbox = Sandbox::new(ScriptLimits::default());
        // NOTE: compiled by a unit test, so this cannot fail in a shipped binary.
        let ast = sandbox
            .compile(RENDER_BUILT_IN_NAME, RENDER_SCRIPT)
            .unwrap_or_default();
        ChainScript {
            sandbox,
            ast,
            name: RENDER_BUILT_IN_NAME.to_owned(),
        }
    }

    /// `moods/render.rhai` under `scripts_dir` when it exists, else the built-in script.
    pub fn load(scripts_dir: Option<&Path>) -> Result<ChainScript, ScriptError> {
        match scripts_dir.map(|d| d.join("moods").join("render.rhai")) {
            Some(path) if path.exists() => {
                let sandbox = Sandbox::new(ScriptLimits::default());
                let ast = sandbox.compile_file(&path)?;
                Ok(ChainScript {
                    sandbox,
                    ast,
                    name: path.display().to_string(),
                })
            }
            _ => Ok(Self::built_in()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Turns `prompt` into chain settings, starting from `hints` (a backend's suggested
    /// settings; empty for the local backend).
    pub fn choose(&self, prompt: &str, hints: &ChainHints) -> Result<ChainChoice, MoodError> {
        let bad = |field: &str, message: String| MoodError::Result {
            script: self.name.clone(),
            field: field.to_owned(),
            message,
        };
        let hints_map =
            rhai::serde::to_dynamic(&hints.0).map_err(|e| bad("hints", e.to_string()))?;
        let returned = self.sandbox.call(
            &self.name,
            &self.ast,
            "chain",
            (prompt.to_owned(), hints_map),
        )?;
        let value: Value =
            rhai::serde::from_dynamic(&returned).map_err(|e| bad("result", e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(bad("result", "expected a map".into()));
        };
        let mut list = |key: &str| -> Result<Vec<String>, MoodError> {
            match map.remove(key) {
                None => Ok(Vec::new()),
                Some(v) => serde_json::from_value(v).map_err(|e| bad(key, e.to_string())),
            }
        };
        let words = list("words")?;
        let unknown = list("unknown")?;
        let settings: ChainSettings = serde_path_to_error::deserialize(Value::Object(map))
            .map_err(|e| {
                let field = e.path().to_string();
                bad(&field, e.into_inner().to_string())
            })?;
        settings.validate().map_err(|e| bad(e.field, e.message))?;
        Ok(ChainChoice {
            prompt: prompt.to_owned(),
            settings,
            words,
            unknown,
        })
    }
}

/// Chain settings a backend suggests for a prompt, field by field (`tilt_db`, `drive`, ...):
/// the render script starts from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainHints(pub serde_json::Map<String, Value>);

impl ChainHints {
    /// Checks that `value` is a map of chain fields to numbers in their ranges.
    pub fn from_value(value: &Value) -> Result<ChainHints, String> {
        let Value::Object(map) = value else {
            return Err("expected an object of chain settings".into());
        };
        let mut out = serde_json::Map::new();
        for (k, v) in map {
            let n = v.as_f64().ok_or_else(|| format!("{k} must be a number"))?;
            out.insert(k.clone(), json!(n));
        }
        let settings: ChainSettings =
            serde_json::from_value(Value::Object(out.clone())).map_err(|e| e.to_string())?;
        settings.validate().map_err(|e| e.to_string())?;
        Ok(ChainHints(out))
    }
}

/// The profile as the script sees it.
fn profile_view(profile: &Profile) -> Value {
    json!({
        "name": profile.name,
        "description": profile.description,
        "tempo": { "min": profile.tempo.min, "default": profile.tempo.default, "max": profile.tempo.max },
        "key": profile.key.to_string(),
        "meter": profile.meter.to_string(),
        "groove": profile.groove.name(),
        "mood": profile.mood,
        "palette": profile.palette,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use djinn_engine::synth::Role;

    fn interpret(prompt: &str, profile: &str) -> Interpretation {
        let profiles = ProfileSet::built_in();
        MoodScript::built_in()
            .interpret(prompt, profiles.get(profile).unwrap(), &profiles)
            .unwrap()
    }

    #[test]
    fn the_built_in_script_compiles() {
        let sandbox = Sandbox::new(ScriptLimits::default());
        sandbox.compile(BUILT_IN_NAME, DEFAULT_SCRIPT).unwrap();
    }

    #[test]
    fn the_built_in_render_script_compiles() {
        let sandbox = Sandbox::new(ScriptLimits::default());
        sandbox
            .compile(RENDER_BUILT_IN_NAME, RENDER_SCRIPT)
            .unwrap();
    }

    fn chain(prompt: &str) -> ChainChoice {
        ChainScript::built_in()
            .choose(prompt, &ChainHints::default())
            .unwrap()
    }

    #[test]
    fn loud_clean_modern_is_a_loud_target_without_drive() {
        let c = chain("loud clean modern mix");
        assert_eq!(c.settings.target_lufs, Some(-9.0));
        assert_eq!(c.settings.drive, 0.0);
        assert!(c.settings.compress >= 0.3 && c.settings.compress <= 0.4);
        assert!(c.unknown.is_empty(), "{:?}", c.unknown);
    }

    #[test]
    fn tight_and_bright_cut_the_lows_and_lift_the_highs() {
        let c = chain("tight low end, brighter top end");
        assert!(c.settings.low_cut_hz >= 35.0);
        assert!(c.settings.low_db < 0.0);
        assert!(c.settings.tilt_db > 0.0 && c.settings.high_db > 0.0);
        assert_eq!(c.settings.target_lufs, None);
        assert_eq!(c.words, vec!["tight", "brighter"]);
    }

    #[test]
    fn written_numbers_win_and_unknown_words_are_listed() {
        let c = chain("loud -12 LUFS, ceiling -2 dBTP, wobbly");
        assert_eq!(c.settings.target_lufs, Some(-12.0));
        assert_eq!(c.settings.ceiling_dbtp, -2.0);
        assert_eq!(c.unknown, vec!["wobbly"]);
    }

    #[test]
    fn hints_are_the_starting_point() {
        let hints = ChainHints::from_value(&json!({ "drive": 0.4, "width": 1.5 })).unwrap();
        let c = ChainScript::built_in().choose("brighter", &hints).unwrap();
        assert_eq!(c.settings.drive, 0.4);
        assert_eq!(c.settings.width, 1.5);
        assert!(c.settings.high_db > 0.0);
        assert!(ChainHints::from_value(&json!({ "kazoo": 1 })).is_err());
        assert!(ChainHints::from_value(&json!({ "drive": "lots" })).is_err());
        assert!(ChainHints::from_value(&json!({ "drive": 7 })).is_err());
    }

    #[test]
    fn the_drill_example() {
        let i = interpret(
            "UK drill beat, dark 808 slides, sparse piano, 142 bpm",
            "deep_house",
        );
        assert_eq!(i.style, "uk_drill");
        assert_eq!(i.recipe.tempo, 142.0);
        assert_eq!(i.recipe.key.to_string(), "F# minor");
        assert_eq!(i.recipe.instrument(Role::Bass), Some(Instrument::Bass808));
        assert_eq!(i.recipe.instrument(Role::Lead), Some(Instrument::Piano));
        assert!(i.recipe.brightness < 0.3);
        assert!(i.recipe.intensity < 0.4);
        assert!(i.unknown.is_empty(), "{:?}", i.unknown);
        assert!(i.mood.contains(&"dark".to_owned()));
    }

    #[test]
    fn numbers_win_and_keys_are_read() {
        let i = interpret("slow deep house in Eb minor at 121", "techno_minimal");
        assert_eq!(i.style, "deep_house");
        assert_eq!(i.recipe.tempo, 121.0);
        assert_eq!(i.recipe.key.to_string(), "Eb minor");
        let i = interpret("slow deep house", "techno_minimal");
        assert_eq!(i.recipe.tempo, 118.0);
        let i = interpret("jungle with reese bass 172bpm, F#m", "sleep");
        assert_eq!(i.recipe.tempo, 172.0);
        assert_eq!(i.recipe.key.to_string(), "F# minor");
        assert_eq!(i.recipe.instrument(Role::Bass), Some(Instrument::Reese));
    }

    #[test]
    fn unknown_words_are_listed() {
        let i = interpret("wobbly kazoo techno", "deep_house");
        assert_eq!(i.style, "techno_minimal");
        assert_eq!(i.unknown, vec!["wobbly".to_owned(), "kazoo".to_owned()]);
    }

    #[test]
    fn a_mood_script_that_fails_when_it_runs_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("moods")).unwrap();
        let path = dir.path().join("moods/default.rhai");
        let (events, mut rx) = EventSink::channel(16);
        let profiles = ProfileSet::built_in();
        let profile = profiles.get("dub").unwrap();
        let interpret = |s: &MoodScript| s.interpret("dark dub", profile, &profiles);

        // A version that works, then one that throws: the working one comes back.
        std::fs::write(&path, "fn interpret(prompt, profile) { #{ tempo: 75.0 } }").unwrap();
        let mut versions = Versions::new(MoodScript::load(Some(dir.path())).unwrap());
        let i = versions.run(&events, |_| {}, interpret).unwrap();
        assert_eq!(i.recipe.tempo, 75.0);
        std::fs::write(
            &path,
            "fn interpret(prompt, profile) {\n  throw \"broken\";\n}",
        )
        .unwrap();
        versions.load(MoodScript::load(Some(dir.path())).unwrap());
        let i = versions.run(&events, |_| {}, interpret).unwrap();
        assert_eq!(i.recipe.tempo, 75.0, "the last good version answered");
        let event = rx.try_recv().unwrap();
        assert_eq!(event.topic, "script");
        assert_eq!(event.data["kind"], "reverted");
        assert!(
            event.data["error"].as_str().unwrap().contains(":2:"),
            "{:?}",
            event.data
        );

        // With no earlier version, the built-in script stands in.
        std::fs::write(&path, "fn interpret(prompt, profile) { loop { } }").unwrap();
        let mut versions = Versions::new(MoodScript::load(Some(dir.path())).unwrap());
        let i = versions.run(&events, |_| {}, interpret).unwrap();
        assert_eq!(i.style, "dub");
        assert!(versions.running().is_built_in());
    }

    #[test]
    fn a_script_returning_nonsense_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("moods")).unwrap();
        std::fs::write(
            dir.path().join("moods/default.rhai"),
            "fn interpret(prompt, profile) { #{ parts: [\"kazoo\"] } }",
        )
        .unwrap();
        let script = MoodScript::load(Some(dir.path())).unwrap();
        let profiles = ProfileSet::built_in();
        let err = script
            .interpret("x", profiles.get("dub").unwrap(), &profiles)
            .unwrap_err();
        assert!(err.to_string().contains("bad parts"), "{err}");
        assert!(err.to_string().contains("moods/default.rhai"), "{err}");
    }
}
