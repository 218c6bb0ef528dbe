//! The read-only state a DJ script sees, built fresh for every call.

use serde_json::{Value, json};

use djinn_engine::analysis::bands::BANDS;
use djinn_engine::profile::{Profile, ProfileSet};
use djinn_engine::transport::Transport;

use super::{DecisionRecord, Set, SetLayer};

/// Share of a layer's energy above which it occupies a band.
pub const OCCUPIED_SHARE: f32 = 0.2;
/// Energy targets and decisions shown to the script.
const RECENT: usize = 16;
const RECENT_DECISIONS: usize = 8;

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A layer as `daemon.status` shows it.
pub(super) fn layer_json_brief(layer: &SetLayer) -> Value {
    json!({
        "id": layer.id,
        "role": layer.role,
        "prompt": layer.prompt,
        "instrument": layer.instrument,
        "bars": layer.bars,
        "started_bar": layer.started_bar + 1,
        "gain": layer.gain,
        "bands": layer.bands.occupied(OCCUPIED_SHARE),
    })
}

fn layer_json(layer: &SetLayer, bar: u64) -> Value {
    let shares = layer.bands.as_array();
    let energy: serde_json::Map<String, Value> = BANDS
        .iter()
        .zip(shares)
        .map(|((name, _), share)| ((*name).to_owned(), json!(round3(f64::from(share)))))
        .collect();
    let mut value = layer_json_brief(layer);
    if let Some(map) = value.as_object_mut() {
        map.remove("started_bar");
        map.insert(
            "age_bars".into(),
            json!(bar.saturating_sub(layer.started_bar)),
        );
        map.insert("seed".into(), json!(layer.seed));
        map.insert("band_energy".into(), Value::Object(energy));
    }
    value
}

fn profile_json(profile: &Profile) -> Value {
    json!({
        "name": profile.name,
        "description": profile.description,
        "tempo": { "min": profile.tempo.min, "default": profile.tempo.default, "max": profile.tempo.max },
        "key": profile.key,
        "meter": profile.meter,
        "phrase_bars": profile.phrase_bars,
        "groove": profile.groove,
        "palette": profile.palette,
        "mood": profile.mood,
    })
}

/// Everything a call gets as `state`.
pub(super) struct StateInput<'a> {
    pub kind: &'static str,
    pub set: &'a Set,
    /// Bar (from 0) the decision takes effect on.
    pub at_bar: u64,
    pub transport: &'a Transport,
    pub profile: &'a Profile,
    pub stems: Vec<&'static str>,
    pub decisions: &'a std::collections::VecDeque<DecisionRecord>,
    pub request: &'a str,
    /// The ratings summary (`count`, `average`, `recent`).
    pub ratings: Value,
    /// Loops from the library that fit the set, by role.
    pub loops: Value,
}

pub(super) fn build(input: &StateInput<'_>) -> Value {
    let set = input.set;
    let position = input.transport.position();
    let bar_now = position.bar.saturating_sub(1);
    let layers: Vec<Value> = set
        .layers
        .values()
        .map(|l| layer_json(l, input.at_bar.max(bar_now)))
        .collect();
    let mut bands = [0.0f64; 5];
    for layer in set.layers.values() {
        for (sum, share) in bands.iter_mut().zip(layer.bands.as_array()) {
            *sum += f64::from(share);
        }
    }
    let bands: serde_json::Map<String, Value> = BANDS
        .iter()
        .zip(bands)
        .map(|((name, _), sum)| ((*name).to_owned(), json!(round3(sum))))
        .collect();
    let recent: Vec<Value> = input
        .decisions
        .iter()
        .rev()
        .take(RECENT_DECISIONS)
        .rev()
        .map(|d| {
            let actions: Vec<&Value> = d.actions.iter().filter_map(|a| a.get("action")).collect();
            json!({ "phrase": d.phrase, "kind": d.kind, "reason": d.reason, "actions": actions })
        })
        .collect();
    let curve: Vec<f64> = set
        .energy_curve
        .iter()
        .rev()
        .take(RECENT)
        .rev()
        .copied()
        .collect();
    let roles: Vec<&str> = set.layers.keys().map(|r| r.name()).collect();
    json!({
        "kind": input.kind,
        "phrase": set.phrase,
        "bar": input.at_bar + 1,
        "phrase_bars": set.phrase_bars,
        "seed": set.seed,
        "transport": {
            "tempo": input.transport.tempo,
            "meter": input.transport.meter,
            "key": input.transport.key.tonic,
            "scale": input.transport.key.scale,
            "bar": position.bar,
            "beat": position.beat,
        },
        "style": input.profile.name,
        "profile": profile_json(input.profile),
        "layers": layers,
        "roles": roles,
        "stems": input.stems,
        "bands": bands,
        "energy": set.energy,
        "energy_curve": curve,
        "decisions": recent,
        "ratings": input.ratings,
        "loops": input.loops,
        "request": input.request,
    })
}

/// A style by its name, or by a word of it that names one style only ("ambient").
pub(super) fn resolve_style(set: &ProfileSet, asked: &str) -> Result<String, String> {
    let asked = asked.trim().to_lowercase().replace([' ', '-'], "_");
    if set.get(&asked).is_some() {
        return Ok(asked);
    }
    let matches: Vec<&str> = set
        .iter()
        .map(|p| p.name.as_str())
        .filter(|name| name.contains(&asked))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => {
            let names: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
            Err(format!(
                "no style matches {asked:?}: expected one of {}",
                names.join(", ")
            ))
        }
        many => Err(format!(
            "{asked:?} matches several styles: {}",
            many.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_resolve_by_a_unique_word() {
        let set = ProfileSet::built_in();
        assert_eq!(
            resolve_style(&set, "ambient").as_deref(),
            Ok("downtempo_ambient")
        );
        assert_eq!(resolve_style(&set, "hip hop").as_deref(), Ok("hip_hop"));
        assert!(resolve_style(&set, "polka").unwrap_err().contains("techno"));
    }
}
