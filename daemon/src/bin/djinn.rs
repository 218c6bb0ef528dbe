//! djinn: talk to a running djinnd from a shell.
//!
//! Readable tables by default, `--json` for scripts. When no daemon answers within the
//! timeout it prints one line and exits with status 2; a request the daemon refused exits 1.

use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use djinn_daemon::client::{Client, ClientError, Events};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "djinn",
    version,
    about = "Control djinnd, the djinn audio daemon"
)]
struct Cli {
    /// djinnd's control endpoint.
    #[arg(
        long,
        global = true,
        env = "DJINN_ENDPOINT",
        default_value = "tcp://127.0.0.1:7700"
    )]
    endpoint: String,
    /// djinnd's event endpoint.
    #[arg(
        long,
        global = true,
        env = "DJINN_EVENTS_ENDPOINT",
        default_value = "tcp://127.0.0.1:7701"
    )]
    events: String,
    /// Token, for a daemon that requires one.
    #[arg(long, global = true, env = "DJINN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for the daemon, in milliseconds.
    #[arg(long, global = true, default_value_t = 3000, value_name = "MS")]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the daemon's state: transport, profile, audio, actors, backends.
    Status,
    /// List profiles, or switch to NAME.
    Profile { name: Option<String> },
    /// Set the tempo in BPM (20–300).
    Bpm { tempo: f64 },
    /// Set the key, like "F minor", "C#m" or "Bb dorian".
    Key { key: String },
    /// Call any method with JSON params and print the JSON result.
    Raw {
        method: String,
        params: Option<String>,
    },
    /// Follow the event stream, optionally only some topics.
    Events { topics: Vec<String> },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("djinn: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("djinn: {e}");
            let code = match e {
                ClientError::Timeout { .. } | ClientError::Socket { .. } => 2,
                _ => 1,
            };
            std::process::ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let mut client = Client::new(
        &cli.endpoint,
        cli.token.clone(),
        Duration::from_millis(cli.timeout),
    );
    let (result, show): (Value, fn(&Value)) = match &cli.command {
        Command::Status => (
            client.call("daemon.status", Value::Null).await?,
            show_status,
        ),
        Command::Profile { name: None } => (
            client.call("profile.list", Value::Null).await?,
            show_profiles,
        ),
        Command::Profile { name: Some(name) } => (
            client.call("profile.set", json!({ "name": name })).await?,
            show_profile_set,
        ),
        Command::Bpm { tempo } => (
            client
                .call("transport.set", json!({ "tempo": tempo }))
                .await?,
            show_transport,
        ),
        Command::Key { key } => (
            client.call("transport.set", json!({ "key": key })).await?,
            show_transport,
        ),
        Command::Raw { method, params } => {
            let params = match params {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| ClientError::BadReply(format!("params are not JSON: {e}")))?,
                None => Value::Null,
            };
            let result = client.call(method, params).await?;
            println!("{}", pretty(&result));
            return Ok(());
        }
        Command::Events { topics } => return follow(&cli, topics).await,
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "djinn", &mut std::io::stdout());
            return Ok(());
        }
    };
    if cli.json {
        println!("{}", pretty(&result));
    } else {
        show(&result);
    }
    Ok(())
}

async fn follow(cli: &Cli, topics: &[String]) -> Result<(), ClientError> {
    let mut events = Events::subscribe(&cli.events, topics).await?;
    let mut stdout = std::io::stdout();
    loop {
        let (topic, body) = events.next().await?;
        let line = if cli.json {
            body.to_string()
        } else {
            let position = &body["position"];
            format!(
                "{:>6}  {}  {}.{}  {:<10} {}",
                text(&body["seq"]),
                text(&body["time"]),
                text(&position["bar"]),
                text(&position["beat"]),
                topic,
                body["data"]
            )
        };
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(()); // the reader went away (`| head`)
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn transport_line(t: &Value) -> String {
    format!(
        "{} BPM  {}  {} {}  {}  bar {} beat {}",
        text(&t["tempo"]),
        text(&t["meter"]),
        text(&t["key"]),
        text(&t["scale"]),
        if t["rolling"] == json!(true) {
            "rolling"
        } else {
            "stopped"
        },
        text(&t["position"]["bar"]),
        text(&t["position"]["beat"]),
    )
}

fn show_status(s: &Value) {
    let uptime = s["uptime_s"].as_f64().unwrap_or_default();
    println!(
        "djinnd {}  pid {}  up {}",
        text(&s["version"]),
        text(&s["pid"]),
        humantime::format_duration(Duration::from_secs(uptime as u64))
    );
    println!("{:<11}{}", "profile", text(&s["profile"]));
    println!("{:<11}{}", "transport", transport_line(&s["transport"]));
    let audio = &s["audio"];
    println!(
        "{:<11}{} {} ({} Hz, {} frames, {} layers, {} xruns): {}",
        "audio",
        text(&audio["driver"]),
        text(&audio["state"]),
        text(&audio["sample_rate"]),
        text(&audio["period"]),
        text(&audio["layers"]),
        text(&audio["xruns"]),
        text(&audio["reason"])
    );
    let control = &s["control"];
    println!(
        "{:<11}{}  events {}  auth {}  requests {}  rejected {}",
        "control",
        text(&control["endpoint"]),
        text(&control["events"]),
        text(&control["auth"]),
        text(&control["requests"]),
        text(&control["rejected"])
    );
    println!("actors");
    if let Some(actors) = s["actors"].as_object() {
        for (name, a) in actors {
            let error = a["last_error"]
                .as_str()
                .map(|e| format!("  last error: {e}"));
            println!(
                "  {:<12}{:<12}restarts {}{}",
                name,
                text(&a["state"]),
                text(&a["restarts"]),
                error.unwrap_or_default()
            );
        }
    }
    println!("backends");
    for b in s["backends"].as_array().into_iter().flatten() {
        let on = if b["enabled"] == json!(true) {
            "on"
        } else {
            "off"
        };
        println!("  {:<12}{:<5}{}", text(&b["name"]), on, text(&b["reason"]));
    }
}

fn show_profiles(list: &Value) {
    println!(
        "  {:<20}{:>7}  {:<18}{:<6}description",
        "name", "bpm", "key", "meter"
    );
    for p in list["profiles"].as_array().into_iter().flatten() {
        let mark = if p["active"] == json!(true) { "*" } else { " " };
        println!(
            "{mark} {:<20}{:>7}  {:<18}{:<6}{}",
            text(&p["name"]),
            text(&p["tempo"]),
            text(&p["key"]),
            text(&p["meter"]),
            text(&p["description"])
        );
    }
    for error in list["errors"].as_array().into_iter().flatten() {
        println!("skipped: {}", text(error));
    }
}

fn show_profile_set(p: &Value) {
    println!(
        "profile {}: {} BPM, {} {}, {}",
        text(&p["profile"]),
        text(&p["tempo"]),
        text(&p["key"]),
        text(&p["scale"]),
        text(&p["meter"])
    );
}

fn show_transport(t: &Value) {
    println!("{}", transport_line(t));
}
