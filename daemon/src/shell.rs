//! `djinn shell`: an interactive prompt for the DJ.
//!
//! Enter lets the DJ decide now; free text asks for that sound; `s drums,bass` restricts the
//! roles; `b 130` sets the tempo; `k F minor` the key; `y ambient` the style; `q` quits (the
//! set plays on). Decisions, layer changes and script errors from the event stream are
//! printed as they happen. Lines are plain text, so the shell works in any terminal and
//! through a pipe.

use serde_json::{Value, json};
use std::io::Write;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, Events};

const HELP: &str = "Enter: DJ decides now | text: play that | s drums,bass: roles | b 130: bpm | \
k F minor: key | y ambient: style | q: quit";

/// Topics the shell follows.
const TOPICS: [&str; 8] = [
    "decision",
    "layer.",
    "script",
    "transport",
    "dj",
    "voice",
    "profile",
    "xrun",
];

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A number as a person writes it: 140, 0.35.
fn num(value: &Value) -> String {
    match value.as_f64() {
        Some(v) => {
            let rounded = (v * 1000.0).round() / 1000.0;
            if rounded.fract() == 0.0 {
                format!("{rounded:.0}")
            } else {
                format!("{rounded}")
            }
        }
        None => text(value),
    }
}

/// `name value` pairs of an object, numbers tidied.
fn settings(value: &Value) -> String {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "action" && k.as_str() != "role")
        .map(|(k, v)| format!("{k} {}", num(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line (or a few) for an event, or none for events not worth a line.
pub fn describe(topic: &str, body: &Value) -> Option<String> {
    let data = &body["data"];
    let bar = text(&body["position"]["bar"]);
    Some(match topic {
        "decision" => {
            let mut out = format!(
                "[bar {}] {} {}: {}",
                text(&data["bar"]),
                text(&data["kind"]),
                text(&data["phrase"]),
                text(&data["reason"])
            );
            for a in data["actions"].as_array().into_iter().flatten() {
                let action = text(&a["action"]);
                let line = match action.as_str() {
                    "add" | "replace" | "impact" => format!(
                        "  {} {} \"{}\" ({}){}",
                        if action == "replace" { "~" } else { "+" },
                        text(&a["role"]),
                        text(&a["prompt"]),
                        text(&a["instrument"]),
                        a["error"]
                            .as_str()
                            .map(|e| format!(" failed: {e}"))
                            .unwrap_or_default()
                    ),
                    "remove" => format!("  - {}", text(&a["role"])),
                    "energy" => format!("  energy {}", num(&a["target"])),
                    "transition" => format!("  transition {}", text(&a["kind"])),
                    "say" => format!("  say \"{}\"", text(&a["text"])),
                    "tempo" => format!("  tempo {} BPM", num(&a["bpm"])),
                    "key" => format!("  key {}", text(&a["key"])),
                    "style" => format!("  style {}", text(&a["style"])),
                    "fx" => format!("  effects {}", settings(&a["patch"])),
                    "set_layer" => format!("  {} {}", text(&a["role"]), settings(a)),
                    "retune" => format!(
                        "  everything re-rendered at {} BPM in {}",
                        num(&a["tempo"]),
                        text(&a["key"])
                    ),
                    _ => format!("  {a}"),
                };
                out.push('\n');
                out.push_str(&line);
            }
            for r in data["rejected"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "\n  refused {}: {}",
                    text(&r["action"]),
                    text(&r["reason"])
                ));
            }
            out
        }
        "layer.started" => format!("[bar {bar}] layer {} playing", text(&data["id"])),
        "layer.ended" => format!("[bar {bar}] layer {} ended", text(&data["id"])),
        "layer.missed" => format!(
            "[bar {bar}] layer {} missed its bar: {}",
            text(&data["id"]),
            text(&data["source"])
        ),
        "script.error" => format!(
            "! script {}:{}: {}",
            text(&data["script"]),
            text(&data["line"]),
            text(&data["message"])
        ),
        "script" if data["kind"] == "loaded" => format!("script {} loaded", text(&data["script"])),
        "script" if data["kind"] == "rejected" => return None,
        "transport" => format!(
            "[bar {bar}] {} BPM, {} {}",
            num(&data["tempo"]),
            text(&data["key"]),
            text(&data["scale"])
        ),
        "profile" if data["kind"] == "changed" => format!("style {}", text(&data["profile"])),
        "dj" => format!("set {}", text(&data["kind"])),
        "voice" => format!("voice: \"{}\"", text(&data["text"])),
        "xrun" => format!("xrun ({} total)", text(&data["total"])),
        _ => return None,
    })
}

/// What a line typed at the prompt asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Quit,
    Help,
    /// A method and its params.
    Call(&'static str, Value),
}

/// Reads one line typed at the prompt.
pub fn parse(line: &str) -> Input {
    let line = line.trim();
    let (head, rest) = match line.split_once(char::is_whitespace) {
        Some((h, r)) => (h, r.trim()),
        None => (line, ""),
    };
    match (head, rest) {
        ("q", "") | ("quit", "") | ("exit", "") => Input::Quit,
        ("?", "") | ("h", "") | ("help", "") => Input::Help,
        ("s", stems) if !stems.is_empty() => Input::Call("dj.set", json!({ "stems": stems })),
        ("b", bpm) if bpm.parse::<f64>().is_ok() => Input::Call(
            "dj.set",
            json!({ "bpm": bpm.parse::<f64>().unwrap_or_default() }),
        ),
        ("k", key) if !key.is_empty() => Input::Call("dj.set", json!({ "key": key })),
        ("y", style) if !style.is_empty() => Input::Call("dj.set", json!({ "style": style })),
        _ => Input::Call("dj.command", json!({ "text": line })),
    }
}

fn answer(method: &str, params: &Value, result: &Value) -> String {
    match method {
        "dj.set" => {
            let what = params
                .as_object()
                .and_then(|m| m.iter().next())
                .map(|(k, v)| format!("{k} {}", num(v)))
                .unwrap_or_default();
            let roles: Vec<String> = result["stems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            match result["at_bar"].as_u64() {
                Some(bar) => format!("ok: {what} (from bar {bar}; roles {})", roles.join(", ")),
                None => format!("ok: {what} (roles {})", roles.join(", ")),
            }
        }
        _ => format!(
            "ok: {} for bar {}",
            if text(&result["kind"]) == "now" {
                "decided now".to_owned()
            } else {
                format!("\"{}\"", text(&params["text"]))
            },
            text(&result["bar"])
        ),
    }
}

/// Runs the shell until `q` or the end of input.
pub async fn run(mut client: Client, events_endpoint: &str) -> Result<(), ClientError> {
    let topics: Vec<String> = TOPICS.iter().map(|t| (*t).to_owned()).collect();
    let mut events = Events::subscribe(events_endpoint, &topics).await?;
    let status = client.call("daemon.status", Value::Null).await?;
    let mut out = std::io::stdout();
    let director = &status["director"];
    let _ = writeln!(
        out,
        "djinn shell: {} ({}), {} BPM",
        text(&director["style"]),
        text(&director["script"]),
        text(&status["transport"]["tempo"])
    );
    if director["playing"] != json!(true) {
        let started = client.call("dj.start", Value::Null).await?;
        let _ = writeln!(
            out,
            "set started: first bar {}, phrases of {} bars",
            text(&started["decision"]["bar"]),
            text(&started["phrase_bars"])
        );
    }
    let _ = writeln!(out, "{HELP}");
    let _ = out.flush();

    // Lines are read on a thread of their own: a blocking read must not stall the events.
    let (tx, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.blocking_send(line.clone()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                match parse(&line) {
                    Input::Quit => break,
                    Input::Help => { let _ = writeln!(out, "{HELP}"); }
                    Input::Call(method, params) => {
                        match client.call(method, params.clone()).await {
                            Ok(result) => { let _ = writeln!(out, "{}", answer(method, &params, &result)); }
                            Err(ClientError::Rpc { message, .. }) => { let _ = writeln!(out, "refused: {message}"); }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            event = events.next() => {
                let (topic, body) = event?;
                if let Some(line) = describe(&topic, &body) {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        let _ = out.flush();
    }
    let _ = writeln!(out, "bye: the set plays on (dj.stop stops it)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_methods() {
        assert_eq!(parse(""), Input::Call("dj.command", json!({ "text": "" })));
        assert_eq!(
            parse("s drums,bass"),
            Input::Call("dj.set", json!({ "stems": "drums,bass" }))
        );
        assert_eq!(
            parse("b 130"),
            Input::Call("dj.set", json!({ "bpm": 130.0 }))
        );
        assert_eq!(
            parse("k F minor"),
            Input::Call("dj.set", json!({ "key": "F minor" }))
        );
        assert_eq!(
            parse("y ambient"),
            Input::Call("dj.set", json!({ "style": "ambient" }))
        );
        assert_eq!(parse("q"), Input::Quit);
        assert_eq!(
            parse("big rolling bass"),
            Input::Call("dj.command", json!({ "text": "big rolling bass" }))
        );
        // A sentence that starts with a key letter is still a request.
        assert_eq!(
            parse("b flat pads"),
            Input::Call("dj.command", json!({ "text": "b flat pads" }))
        );
    }
}
