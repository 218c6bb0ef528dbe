//! djinn: talk to a running djinnd from a shell.
//!
//! Readable tables by default, `--json` for scripts. When no daemon answers within the
//! timeout it prints one line and exits with status 2; a request the daemon refused exits 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use djinn_daemon::client::{Client, ClientError, Events};
use djinn_daemon::offline;
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
enum DjAction {
    /// Start a set (the active style's DJ script decides).
    Start {
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Stop the set; its layers leave at the next bar.
    Stop,
    /// Ask for something ("darker bass"); with no text, the DJ decides now.
    Ask { text: Vec<String> },
}

#[derive(Subcommand)]
enum LibraryAction {
    /// Analyse every audio file under DIR (recursively) into a JSON-lines library, here,
    /// with no daemon; a re-run analyses only new or changed files.
    Build {
        dir: PathBuf,
        /// The library file to write (and to reuse unchanged files from).
        #[arg(short, long, default_value = "labeled_prompts.jsonl")]
        output: PathBuf,
        /// Files analysed at once (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Search the daemon's library (library.search).
    Search {
        /// Tempo range, like 118-126.
        #[arg(long, value_parser = parse_range)]
        bpm: Option<[f64; 2]>,
        /// Key, like "A minor" or "F#m".
        #[arg(long)]
        key: Option<String>,
        /// drums, bass, pad, lead, vocal or full_mix.
        #[arg(long)]
        role: Option<String>,
        /// At most this many results.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Words that must appear in the prompt or path.
        text: Vec<String>,
    },
}

fn parse_range(text: &str) -> Result<[f64; 2], String> {
    let (lo, hi) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range like 118-126"))?;
    let num = |s: &str| s.trim().parse::<f64>().map_err(|e| format!("{s:?}: {e}"));
    Ok([num(lo)?, num(hi)?])
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
    /// Play a DJ set interactively: Enter lets the DJ decide, text asks for a sound,
    /// `s drums,bass` roles, `b 130` bpm, `k F minor` key, `y ambient` style, `q` quit.
    Shell,
    /// Start, stop or steer the DJ set (dj.start, dj.stop, dj.command).
    Dj {
        #[command(subcommand)]
        action: DjAction,
    },
    /// Render a song from a prompt to a WAV file, here, with no daemon.
    Generate {
        /// What to play, like "UK drill beat, dark 808 slides, sparse piano, 142 bpm".
        #[arg(long, short)]
        prompt: Option<String>,
        /// Length in seconds, 10 to 3600; the file is exactly this long.
        #[arg(long, short, default_value_t = 180.0)]
        seconds: f64,
        /// Where to write the WAV file (32-bit float stereo).
        #[arg(long, short)]
        output: PathBuf,
        /// Seed: the same seed and prompt give the same song.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Style profile to start from (the prompt may name another).
        #[arg(long)]
        profile: Option<String>,
        /// Extra profiles directory.
        #[arg(long, value_name = "DIR")]
        profiles: Option<PathBuf>,
        /// Scripts directory (moods/default.rhai).
        #[arg(long, value_name = "DIR")]
        scripts: Option<PathBuf>,
        /// Sample rate in Hz.
        #[arg(long, default_value_t = 48_000)]
        rate: u32,
        /// Only these roles play, comma-separated (pad, bass, lead, drum, fx).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Judge audio files: loudness, true peak, clipping, DC, silence, phase and scores.
    ///
    /// Several files are analysed on all cores and reported in the order given (with
    /// --json, one JSON object a line); a file that cannot be read is reported and skipped.
    Analyze {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Profile whose loudness target and ceiling apply.
        #[arg(long)]
        profile: Option<String>,
        /// Extra profiles directory.
        #[arg(long, value_name = "DIR")]
        profiles: Option<PathBuf>,
        /// Integrated loudness target, LUFS (default: the profile's).
        #[arg(long, allow_negative_numbers = true)]
        target_lufs: Option<f64>,
        /// True-peak ceiling, dBTP (default: the profile's).
        #[arg(long, allow_negative_numbers = true)]
        true_peak_limit: Option<f64>,
        /// Only measure loudness (integrated, range, true and sample peak), like ffmpeg's
        /// ebur128 filter.
        #[arg(long)]
        loudness: bool,
        /// Only find the tempo, the beats and the key.
        #[arg(long, conflicts_with = "loudness")]
        tempo_key: bool,
    },
    /// Fit a file to a tempo (and transpose it) with Rubber Band, here, with no daemon.
    Stretch {
        file: PathBuf,
        /// Output WAV file (at the input's sample rate).
        #[arg(short, long)]
        output: PathBuf,
        /// The tempo to reach, BPM.
        #[arg(long)]
        bpm: f64,
        /// The input's tempo, BPM (default: detected from its onsets).
        #[arg(long)]
        from_bpm: Option<f64>,
        /// Transpose by this many semitones (-36 to 36).
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        semitones: f64,
        /// Rubber Band engine: finer (R3, best quality) or faster (R2).
        #[arg(long, value_enum, default_value = "finer")]
        engine: StretchEngine,
    },
    /// Process a file with the chain a prompt describes ("loud clean modern mix"), here, with
    /// no daemon.
    Render {
        file: PathBuf,
        /// Output file, WAV or FLAC by its extension, at the input's sample rate.
        #[arg(short, long)]
        output: PathBuf,
        /// What to do to the sound, like "tight low end, brighter top end".
        #[arg(long, short)]
        prompt: String,
        /// Who suggests the chain before the prompt's words adjust it.
        #[arg(long, default_value = "local")]
        backend: String,
        /// Scripts directory (moods/render.rhai).
        #[arg(long, value_name = "DIR")]
        scripts: Option<PathBuf>,
    },
    /// Build or search the loop library.
    Library {
        #[command(subcommand)]
        action: LibraryAction,
    },
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
    if let Some(result) = run_offline(&cli) {
        return match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("djinn: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
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

/// Runs the commands that need no daemon; `None` for the others.
fn run_offline(cli: &Cli) -> Option<anyhow::Result<()>> {
    match &cli.command {
        Command::Generate {
            prompt,
            seconds,
            output,
            seed,
            profile,
            profiles,
            scripts,
            rate,
            roles,
        } => {
            let options = offline::GenerateOptions {
                prompt: prompt.clone(),
                seconds: *seconds,
                output: output.clone(),
                seed: *seed,
                profile: profile.clone(),
                profiles_dir: profiles.clone(),
                scripts_dir: scripts.clone(),
                sample_rate: *rate,
                roles: roles.clone(),
            };
            Some(with_progress(cli, "rendering", show_song, |progress| {
                offline::generate(&options, progress)
            }))
        }
        Command::Analyze {
            files,
            profile,
            profiles,
            target_lufs,
            true_peak_limit,
            loudness,
            tempo_key,
        } => {
            // The profile is only needed to judge, and is looked up once for all the files.
            let judging = if *tempo_key || *loudness {
                None
            } else {
                let options = offline::AnalyzeOptions {
                    profile: profile.clone(),
                    profiles_dir: profiles.clone(),
                    target_lufs: *target_lufs,
                    true_peak_limit: *true_peak_limit,
                };
                match options.judging() {
                    Ok(judging) => Some(judging),
                    Err(e) => return Some(Err(e)),
                }
            };
            let one = |file: &Path| match &judging {
                Some(judging) => offline::analyze(file, judging),
                None if *tempo_key => offline::tempo_key(file),
                None => offline::loudness(file),
            };
            let first = std::cell::Cell::new(true);
            let show = |r: &Value| {
                if cli.json {
                    // One file: as before, pretty; several: JSON Lines.
                    match files.len() {
                        1 => println!("{}", pretty(r)),
                        _ => println!("{r}"),
                    }
                    return;
                }
                if !first.replace(false) {
                    println!();
                }
                if *tempo_key {
                    show_tempo_key(r);
                } else if *loudness {
                    println!("file       {}", text(&r["file"]));
                    show_loudness(&r["loudness"]);
                } else {
                    show_assessment(r);
                }
            };
            Some(for_each_file(files, one, show))
        }
        Command::Stretch {
            file,
            output,
            bpm,
            from_bpm,
            semitones,
            engine,
        } => {
            let options = offline::StretchOptions {
                output: output.clone(),
                bpm: *bpm,
                from_bpm: *from_bpm,
                semitones: *semitones,
                engine: match engine {
                    StretchEngine::Finer => djinn_engine::stretch::Engine::Finer,
                    StretchEngine::Faster => djinn_engine::stretch::Engine::Faster,
                },
            };
            Some(with_progress(cli, "stretching", show_stretch, |progress| {
                offline::stretch(file, &options, progress)
            }))
        }
        Command::Render {
            file,
            output,
            prompt,
            backend,
            scripts,
        } => {
            let options = offline::RenderOptions {
                output: output.clone(),
                prompt: prompt.clone(),
                backend: backend.clone(),
                hints: Default::default(),
                scripts_dir: scripts.clone(),
            };
            Some(with_progress(cli, "rendering", show_render, |progress| {
                offline::render(file, &options, progress)
            }))
        }
        Command::Library {
            action: LibraryAction::Build { dir, output, jobs },
        } => Some(library_build(cli, dir, output, *jobs)),
        _ => None,
    }
}

fn library_build(
    cli: &Cli,
    dir: &std::path::Path,
    output: &std::path::Path,
    jobs: Option<usize>,
) -> anyhow::Result<()> {
    use djinn_actors::library;
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let bar = progress_bar("analysing");
    let report = library::build(
        dir,
        output,
        jobs,
        &|done, total| {
            bar.set_length(total.max(1) as u64);
            bar.set_position(done as u64);
        },
        &|skipped| {
            bar.suspend(|| {
                eprintln!(
                    "djinn: warning: skipped {}: {}",
                    skipped.path.display(),
                    skipped.reason
                )
            });
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot build the library from {}: {e}", dir.display()))?;
    bar.finish_and_clear();
    if cli.json {
        println!("{}", pretty(&json!(report)));
    } else {
        println!(
            "wrote      {} ({} files: {} analysed, {} unchanged, {} skipped) in {:.1} s",
            report.output.display(),
            report.entries.len(),
            report.analysed,
            report.reused,
            report.skipped.len(),
            report.seconds
        );
    }
    Ok(())
}

fn show_library(r: &Value) {
    let results = r["results"].as_array().cloned().unwrap_or_default();
    if results.is_empty() {
        println!("no loops match");
    }
    for e in results {
        println!("{:<40}  {}", text(&e["prompt"]), text(&e["path"]));
    }
}

fn show_render(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("wrote      {}", text(&r["file"]));
    let c = &r["chain"];
    let target = match r["target_lufs"].as_f64() {
        Some(t) if c["target_lufs"].is_null() => format!("{t:.1} LUFS (the input's)"),
        Some(t) => format!("{t:.1} LUFS"),
        None => "none".to_owned(),
    };
    println!(
        "chain      low cut {} · low shelf {:+.1} dB · tilt {:+.1} dB · high shelf {:+.1} dB",
        match f(&c["low_cut_hz"]) {
            hz if hz > 0.0 => format!("{hz:.0} Hz"),
            _ => "off".to_owned(),
        },
        f(&c["low_db"]),
        f(&c["tilt_db"]),
        f(&c["high_db"])
    );
    println!(
        "           compress {:.2} · drive {:.2} · width {:.2} · limiter {:.1} dBTP · target {target}",
        f(&c["compress"]),
        f(&c["drive"]),
        f(&c["width"]),
        f(&c["ceiling_dbtp"])
    );
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    println!("understood {}", list(&r["words"]));
    if r["unknown"].as_array().is_some_and(|a| !a.is_empty()) {
        println!("unknown    {}", list(&r["unknown"]));
    }
    println!(
        "           {:>10} {:>10} {:>9}",
        "before", "after", "change"
    );
    let row = |name: &str, unit: &str, path: &[&str]| {
        let get = |side: &str| path.iter().fold(&r[side], |v, k| &v[*k]).as_f64();
        let (b, a) = (get("before"), get("after"));
        let cell = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.1}"));
        let change = match (b, a) {
            (Some(b), Some(a)) => format!("{:+.1}", a - b),
            _ => "-".to_owned(),
        };
        println!(
            "{name:<10} {:>10} {:>10} {change:>9} {unit}",
            cell(b),
            cell(a)
        );
    };
    row("loudness", "LUFS", &["loudness", "integrated_lufs"]);
    row("true peak", "dBTP", &["loudness", "true_peak_dbtp"]);
    row("range", "LU", &["loudness", "range_lu"]);
    row("high/low", "dB", &["balance", "high_low_db"]);
    let bands = |side: &str| {
        let b = &r[side]["balance"]["bands"];
        ["sub", "low", "mid", "high", "air"]
            .iter()
            .map(|k| format!("{k} {:.0}%", f(&b[*k]) * 100.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("bands      before  {}", bands("before"));
    println!("           after   {}", bands("after"));
    show_mastering(&r["mastering"]);
    println!(
        "rendered   {:.1} s in {:.2} s ({:.0}x realtime)",
        f(&r["seconds"]),
        f(&r["render_seconds"]),
        f(&r["realtime_factor"])
    );
}

/// Rubber Band's engines, as `djinn stretch --engine` names them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StretchEngine {
    Finer,
    Faster,
}

fn show_stretch(r: &Value) {
    println!("wrote      {}", text(&r["file"]));
    println!(
        "tempo      {:.2} → {:.2} BPM{}  (time ratio {:.4})",
        r["from_bpm"].as_f64().unwrap_or(0.0),
        r["bpm"].as_f64().unwrap_or(0.0),
        match r["from_bpm_source"].as_str() {
            Some("audio") => " (detected)",
            Some("file") => " (the file's own)",
            _ => "",
        },
        r["time_ratio"].as_f64().unwrap_or(1.0)
    );
    println!(
        "transpose  {:+} semitones",
        r["semitones"].as_f64().unwrap_or(0.0)
    );
    println!(
        "length     {:.3} s → {:.3} s  ({} frames at {} Hz)",
        r["input_seconds"].as_f64().unwrap_or(0.0),
        r["seconds"].as_f64().unwrap_or(0.0),
        text(&r["frames"]),
        text(&r["sample_rate"])
    );
    let took = r["render_seconds"].as_f64().unwrap_or(0.0);
    println!(
        "rendered   in {took:.2} s with the {} engine on {} ({:.0}x realtime)",
        text(&r["engine"]),
        match r["threads"].as_u64() {
            Some(2) => "two threads",
            _ => "one thread",
        },
        r["input_seconds"].as_f64().unwrap_or(0.0) / took.max(1e-9)
    );
}

/// Runs long offline work under a progress bar, then prints its report as JSON or with
/// `show`.
fn with_progress(
    cli: &Cli,
    doing: &str,
    show: fn(&Value),
    work: impl FnOnce(&mut dyn FnMut(f64)) -> anyhow::Result<Value>,
) -> anyhow::Result<()> {
    let bar = progress_bar(doing);
    let result = work(&mut |done| bar.set_position((done * 1000.0) as u64));
    bar.finish_and_clear();
    result.map(|report| {
        if cli.json {
            println!("{}", pretty(&report));
        } else {
            show(&report);
        }
    })
}

/// A progress bar on a terminal, nothing when stderr is not one.
fn progress_bar(doing: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(1000),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {doing} [{{bar:40}}] {{percent:>3}}%  {{elapsed}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn show_song(r: &Value) {
    println!("wrote      {}", text(&r["file"]));
    println!(
        "length     {:.3} s  ({} frames at {} Hz)",
        r["seconds"].as_f64().unwrap_or(0.0),
        text(&r["frames"]),
        text(&r["sample_rate"])
    );
    let recipe = &r["recipe"];
    println!(
        "style      {}  {} BPM  {}  {}",
        text(&r["style"]),
        text(&recipe["tempo"]),
        text(&recipe["key"]),
        text(&recipe["groove"])
    );
    let parts: Vec<String> = recipe["parts"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    println!("parts      {}", parts.join(", "));
    let sections: Vec<String> = r["sections"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| format!("{} ({} bars)", text(&s["kind"]), text(&s["bars"])))
                .collect()
        })
        .unwrap_or_default();
    println!("sections   {}", sections.join(" → "));
    show_loudness(&r["loudness"]);
    show_mastering(&r["mastering"]);
    if let Some(unknown) = r["unknown"].as_array().filter(|a| !a.is_empty()) {
        let words: Vec<String> = unknown.iter().map(text).collect();
        println!("not understood: {}", words.join(", "));
    }
    println!(
        "rendered   in {:.2} s ({:.0}x realtime)",
        r["render_seconds"].as_f64().unwrap_or(0.0),
        r["realtime_factor"].as_f64().unwrap_or(0.0)
    );
}

/// What the master stage did, where it ran (a report's `mastering`).
fn show_mastering(m: &Value) {
    if m.is_null() || m["passes"].as_u64() == Some(0) {
        return;
    }
    let passes = m["passes"].as_u64().unwrap_or(1);
    println!(
        "master     {:+.1} dB into the limiter at {:.2} dBTP, release {} ms{}",
        m["gain_db"].as_f64().unwrap_or(0.0),
        m["limiter_ceiling_dbtp"].as_f64().unwrap_or(0.0),
        m["limiter_release_ms"].as_f64().unwrap_or(0.0),
        if passes > 1 {
            format!(", {passes} passes")
        } else {
            String::new()
        }
    );
}

fn show_loudness(l: &Value) {
    println!(
        "loudness   {:.1} LUFS integrated, LRA {:.1} LU, true peak {:.2} dBTP",
        l["integrated_lufs"].as_f64().unwrap_or(f64::NEG_INFINITY),
        l["range_lu"].as_f64().unwrap_or(0.0),
        l["true_peak_dbtp"].as_f64().unwrap_or(f64::NEG_INFINITY)
    );
}

fn show_assessment(r: &Value) {
    println!("file       {}", text(&r["file"]));
    show_loudness(&r["loudness"]);
    println!(
        "target     {} LUFS, ceiling {} dBTP ({})",
        text(&r["target"]["lufs"]),
        text(&r["target"]["true_peak_limit"]),
        text(&r["target"]["profile"])
    );
    if let Some(bpm) = r["tempo"]["bpm"].as_f64() {
        let beats = r["beats"].as_array().map_or(0, Vec::len);
        let first = r["beats"][0].as_f64().unwrap_or(0.0);
        println!("tempo      {bpm:.1} BPM, {beats} beats from {first:.3} s");
    }
    show_loop_info(&r["loop_info"]);
    if let Some(key) = r["key"]["key"].as_str() {
        println!(
            "key        {key}  (correlation {:.2}, {:.0} % of the notes in it)",
            r["key"]["correlation"].as_f64().unwrap_or(0.0),
            r["key"]["in_key"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    println!(
        "sound      {} (confidence {:.2}), brightness {:.2} (centroid {:.0} Hz)",
        text(&r["role"]["role"]),
        r["role"]["confidence"].as_f64().unwrap_or(0.0),
        r["brightness"].as_f64().unwrap_or(0.0),
        r["spectral"]["centroid_hz"].as_f64().unwrap_or(0.0)
    );
    for key in [
        "overall_score",
        "mix_readiness",
        "perceptual_quality",
        "stability",
    ] {
        println!("{key:<19}{:.2}", r[key].as_f64().unwrap_or(0.0));
    }
    let violations = r["violations"].as_array().cloned().unwrap_or_default();
    if violations.is_empty() {
        println!("violations none");
    }
    for v in violations {
        println!("violation  {}: {}", text(&v["kind"]), text(&v["message"]));
    }
    for w in r["warnings"].as_array().cloned().unwrap_or_default() {
        println!("warning    {}", text(&w));
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
        Command::Shell => return djinn_daemon::shell::run(client, &cli.events).await,
        Command::Dj { action } => {
            let (method, params) = match action {
                DjAction::Start { seed } => ("dj.start", json!({ "seed": seed })),
                DjAction::Stop => ("dj.stop", Value::Null),
                DjAction::Ask { text } => ("dj.command", json!({ "text": text.join(" ") })),
            };
            (client.call(method, params).await?, show_dj)
        }
        Command::Library {
            action:
                LibraryAction::Search {
                    bpm,
                    key,
                    role,
                    limit,
                    text,
                },
        } => {
            let mut params = json!({ "limit": limit });
            if let Some(bpm) = bpm {
                params["bpm"] = json!(bpm);
            }
            if let Some(key) = key {
                params["key"] = json!(key);
            }
            if let Some(role) = role {
                params["role"] = json!(role);
            }
            if !text.is_empty() {
                params["text"] = json!(text.join(" "));
            }
            (client.call("library.search", params).await?, show_library)
        }
        Command::Generate { .. }
        | Command::Analyze { .. }
        | Command::Stretch { .. }
        | Command::Render { .. }
        | Command::Library { .. } => {
            return Ok(());
        }
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

/// The tempo, beats and key of one file, as `djinn analyze --tempo-key` prints them.
fn show_tempo_key(r: &Value) {
    println!("file       {}", text(&r["file"]));
    match r["tempo"]["bpm"].as_f64() {
        Some(bpm) => println!(
            "tempo      {bpm:.1} BPM, {} beats from {:.3} s",
            r["beats"].as_array().map_or(0, Vec::len),
            r["beats"][0].as_f64().unwrap_or(0.0)
        ),
        None => println!("tempo      none (no steady beat)"),
    }
    show_loop_info(&r["loop_info"]);
    match r["key"]["key"].as_str() {
        Some(key) => println!("key        {key}"),
        None => println!("key        none (no tonal content)"),
    }
}

/// What a file says of its own timing, where it says anything.
fn show_loop_info(info: &Value) {
    if let Some(bpm) = info["bpm"].as_f64() {
        let root = info["root"]
            .as_str()
            .map_or_else(String::new, |r| format!(", root {r}"));
        let kind = if info["one_shot"] == true {
            "one-shot"
        } else {
            "loop"
        };
        println!(
            "tagged     {bpm} BPM, {} beats of {}{root} ({kind}, the file's own acid chunk)",
            text(&info["beats"]),
            text(&info["meter"])
        );
    }
}

/// Runs `one` on each file, on as many threads as there are cores, and shows each result
/// in the files' order as soon as it and those before it are done. A file that fails is
/// reported and skipped, and the command fails at the end if any did; a single file's
/// error is the command's.
fn for_each_file(
    files: &[PathBuf],
    one: impl Fn(&Path) -> anyhow::Result<Value> + Sync,
    show: impl Fn(&Value),
) -> anyhow::Result<()> {
    if let [file] = files {
        return one(file).map(|r| show(&r));
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut failed = 0;
    djinn_engine::work::on_threads_in_order(
        files,
        threads,
        |file| one(file),
        |i, result| match result {
            Ok(r) => show(&r),
            Err(e) => {
                failed += 1;
                eprintln!("djinn: {}: {e:#}", files[i].display());
            }
        },
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} files could not be analysed", files.len());
    }
    Ok(())
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

/// The clock as `djinn status` shows it: source, tempo, lock, phase error, jitter, and
/// whether djinn sends MIDI clock.
fn clock_line(c: &Value) -> String {
    let ms = |v: &Value| v.as_f64().map_or("-".into(), |ms| format!("{ms:.2} ms"));
    let mut line = format!("{} {} BPM", text(&c["source"]), text(&c["tempo"]));
    if c["source"] == "midi" {
        line += &format!(
            "  {}  phase error {}  jitter {}",
            text(&c["lock"]).replace('_', " "),
            ms(&c["phase_error_ms"]),
            ms(&c["jitter_ms"])
        );
    }
    if c["master_clock"] == json!(true) {
        line += "  sending MIDI clock";
    }
    if let Some(alsa) = c["alsa"].as_str() {
        line += &format!("  ALSA: {alsa}");
    }
    line
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
    for error in s["profile_errors"].as_array().into_iter().flatten() {
        println!("{:<11}{}", "profile!", text(error));
    }
    if let Some(error) = s["state"]["error"].as_str() {
        println!("{:<11}not saved: {error}", "state");
    }
    println!("{:<11}{}", "transport", transport_line(&s["transport"]));
    let audio = &s["audio"];
    if let Some(error) = audio["recording_error"].as_str() {
        println!("{:<11}FAILED: {error}", "recording");
    } else if let Some(path) = audio["recording"].as_str() {
        println!("{:<11}{path}", "recording");
    }
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
    println!("{:<11}{}", "clock", clock_line(&audio["clock"]));
    for pair in audio["connections_waiting"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "{:<11}{} → {} (when both ports are there)",
            "waiting",
            text(&pair[0]),
            text(&pair[1])
        );
    }
    let dj = &s["director"];
    if dj["playing"] == json!(true) {
        println!(
            "{:<11}playing {} ({}), phrase {}, next at bar {}, energy {}, decide p99 {} ms",
            "dj",
            text(&dj["style"]),
            text(&dj["script"]),
            text(&dj["phrase"]),
            text(&dj["next_phrase_bar"]),
            text(&dj["energy"]),
            text(&dj["decide_ms"]["p99"])
        );
        for l in dj["layers"].as_array().into_iter().flatten() {
            println!(
                "  {:<6}{}  ({})",
                text(&l["role"]),
                text(&l["prompt"]),
                text(&l["instrument"])
            );
        }
    } else {
        println!("{:<11}idle ({})", "dj", text(&dj["script"]));
    }
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

fn show_dj(r: &Value) {
    if let Some(reason) = r["reason"].as_str() {
        println!("bar {}: {reason}", text(&r["bar"]));
        return;
    }
    println!(
        "set {}  {} ({})  phrases of {} bars, next at bar {}",
        if r["playing"] == json!(true) {
            "playing"
        } else {
            "stopped"
        },
        text(&r["style"]),
        text(&r["script"]),
        text(&r["phrase_bars"]),
        text(&r["next_phrase_bar"])
    );
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
