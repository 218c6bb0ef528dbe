//! Log setup: plain lines on stderr that journald reads well.
//!
//! Under systemd (JOURNAL_STREAM is set) lines carry no timestamp, since journald adds its
//! own; colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `level` is a tracing filter ("info", "djinn=debug").
pub fn init(level: &str) {
    // kameo wraps every message in an info-level span; at our default level that would prefix
    // each line with actor internals, so its spans show only when asked for by name.
    let directives = format!("kameo=warn,{level}");
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("djinnd: bad log level {level:?} ({e}); using info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    // A subscriber already installed (tests running several daemons) is fine.
    drop(result);
}
