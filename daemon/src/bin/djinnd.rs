//! djinnd: the djinn daemon. Flags and logging here; everything else in the library.

use clap::Parser;
use djinn_daemon::Daemon;
use djinn_daemon::config::{ConfigLoader, Flags};
use tokio::signal::unix::{SignalKind, signal};

// Debug builds abort the moment the audio callback allocates (see the realtime rules in
// the design notes); release builds use the system allocator untouched.
#[cfg(debug_assertions)]
#[global_allocator]
static ALLOCATOR: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    let loader = ConfigLoader::new(flags);
    let config = match loader.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("djinnd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    djinn_daemon::logging::init(&config.daemon.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("djinnd")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("djinnd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(loader)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("djinnd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(loader: ConfigLoader) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let daemon = Daemon::start(loader).await?;
    // The client is built next to the daemon; show the path that works from here.
    let djinn = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("djinn")))
        .filter(|path| path.exists())
        .map_or_else(|| "djinn".to_owned(), |path| path.display().to_string());
    println!(
        "djinnd listening: control {control} events {events}\n  \
         talk to it: {djinn} --endpoint {control} --events {events} status\n  \
         follow it:  {djinn} --events {events} events\n  \
         stop it:    Ctrl-C",
        control = daemon.control_endpoint(),
        events = daemon.events_endpoint(),
    );
    let shutdown = daemon.shutdown();
    let run = async {
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM"); break }
                _ = interrupt.recv() => { tracing::info!("SIGINT"); break }
                _ = hangup.recv() => { tracing::info!("SIGHUP: reloading"); daemon.reload().await }
                () = shutdown.wait() => break,
            }
        }
        shutdown.trigger();
        daemon.run().await
    };
    run.await
}
