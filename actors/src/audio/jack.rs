//! The JACK driver: djinn's client, its ports, and the mixer inside the process callback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use djinn_engine::mix::{ExternalPosition, Group, Outputs, Processor};

use super::timebase::{self, TimebaseShare};
use jack::{
    AudioIn, AudioOut, Client, ClientOptions, Control, MidiIn, MidiOut, Port, ProcessScope,
    RawMidi, TransportState,
};

/// Counters the callback and JACK's notification thread update for the actor to read.
#[derive(Debug, Default)]
pub struct JackStats {
    pub xruns: AtomicU64,
    /// Longest callback so far, microseconds.
    pub longest_callback_us: AtomicU64,
    /// Set when the server shut the client down.
    pub server_gone: AtomicBool,
    /// Set when some client registered or unregistered a port.
    pub ports_changed: AtomicBool,
}

/// How often connections that wait for their ports are tried without a port having come or
/// gone (a port can register before its client is active, and cannot be connected then).
const WAITING_RETRY: Duration = Duration::from_secs(1);
/// Failed tries, both ports there, after which a connection's refusal is logged.
const FAILURES_REPORTED: u32 = 3;

struct Notifier {
    stats: Arc<JackStats>,
}

impl jack::NotificationHandler for Notifier {
    fn xrun(&mut self, _: &Client) -> Control {
        self.stats.xruns.fetch_add(1, Ordering::Relaxed);
        Control::Continue
    }

    unsafe fn shutdown(&mut self, _status: jack::ClientStatus, _reason: &str) {
        self.stats.server_gone.store(true, Ordering::Relaxed);
    }

    fn port_registration(&mut self, _: &Client, _: jack::PortId, _: bool) {
        // NOTE: JACK forbids connecting from its callbacks: the actor does it on its tick.
        self.stats.ports_changed.store(true, Ordering::Relaxed);
    }
}

struct Mixer {
    processor: Processor,
    timebase: Arc<TimebaseShare>,
    master: [Port<AudioOut>; 2],
    groups: [[Port<AudioOut>; 2]; 4],
    inputs: [Port<AudioIn>; 2],
    clock_in: Port<MidiIn>,
    clock_out: Port<MidiOut>,
    stats: Arc<JackStats>,
}

impl jack::ProcessHandler for Mixer {
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    fn process(&mut self, client: &Client, ps: &ProcessScope) -> Control {
        // NOTE: jack_get_time reads the monotonic clock through the vDSO: no system call.
        let start = client.time();
        let [ml, mr] = &mut self.master;
        let [g0, g1, g2, g3] = &mut self.groups;
        let [il, ir] = &self.inputs;
        let mut outputs = Outputs {
            master: [ml.as_mut_slice(ps), mr.as_mut_slice(ps)],
            groups: [pair(g0, ps), pair(g1, ps), pair(g2, ps), pair(g3, ps)],
            input: [il.as_slice(ps), ir.as_slice(ps)],
        };
        let processor = &mut self.processor;
        for event in self.clock_in.iter(ps) {
            processor.clock_input(event.time, event.bytes);
        }
        if let Ok(times) = ps.cycle_times() {
            processor.clock_time_base(times.current_usecs);
        }
        if processor.follows_jack()
            && let Ok(state) = client.transport().query()
        {
            processor.external_position(external_position(&state));
        }
        // NOTE: the frame clock, not a count of periods, places the period: after an xrun
        // the grid (and the MIDI clock djinn sends) stays where it was.
        let frame_time = u64::from(ps.last_frame_time());
        #[cfg(debug_assertions)]
        assert_no_alloc::assert_no_alloc(|| processor.process_at(frame_time, &mut outputs));
        #[cfg(not(debug_assertions))]
        processor.process_at(frame_time, &mut outputs);
        self.timebase.store(processor.transport());
        let mut writer = self.clock_out.writer(ps);
        let mut lost = 0;
        for &(offset, message) in processor.clock_output() {
            let (bytes, len) = message.encode();
            let raw = RawMidi {
                time: offset,
                bytes: bytes.get(..len).unwrap_or(&[]),
            };
            lost += u64::from(writer.write(&raw).is_err());
        }
        processor.count_dropped_clock(lost);
        let took = client.time().saturating_sub(start);
        self.stats
            .longest_callback_us
            .fetch_max(took, Ordering::Relaxed);
        Control::Continue
    }
}

/// JACK transport as the processor follows it: bars and beats when a timebase master
/// publishes them, the frame otherwise.
///
/// Runs on the JACK thread: no allocation, locks, system calls or logging.
fn external_position(state: &jack::TransportStatePosition) -> ExternalPosition {
    let bbt = state.pos.bbt();
    ExternalPosition {
        beats: bbt.map(|b| {
            let per_bar = f64::from(b.sig_num.max(1.0));
            let ticks = if b.ticks_per_beat > 0.0 {
                b.tick as f64 / b.ticks_per_beat
            } else {
                0.0
            };
            (b.bar.max(1) - 1) as f64 * per_bar + (b.beat.max(1) - 1) as f64 + ticks
        }),
        frame: u64::from(state.pos.frame()),
        tempo: bbt.map(|b| b.bpm),
        rolling: state.state == TransportState::Rolling,
    }
}

fn pair<'a>(ports: &'a mut [Port<AudioOut>; 2], ps: &'a ProcessScope) -> [&'a mut [f32]; 2] {
    let [l, r] = ports;
    [l.as_mut_slice(ps), r.as_mut_slice(ps)]
}

/// Where djinn's ports connect: when the client starts, and again whenever a port named
/// here comes (back) later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connections {
    /// Ports out_L/out_R connect to; empty: the first two physical playback ports.
    pub outputs: Vec<String>,
    /// MIDI ports whose clock feeds clock_in.
    pub clock_in: Vec<String>,
    /// MIDI ports clock_out sends to.
    pub clock_out: Vec<String>,
}

/// A connection the configuration asks for, kept while its ports come and go.
struct Wanted {
    source: String,
    target: String,
    /// Not made yet: it is made as soon as both ports are there. A connection undone by
    /// hand stays undone until one of its ports goes away and comes back.
    waiting: bool,
    /// Tries that failed with both ports there.
    failures: u32,
}

/// A running JACK client; dropping it closes the client.
pub struct JackDriver {
    // NOTE: declared first so it closes first: the timebase callback reads `timebase`.
    client: jack::AsyncClient<Notifier, Mixer>,
    timebase: Arc<TimebaseShare>,
    pub stats: Arc<JackStats>,
    pub name: String,
    wanted: Vec<Wanted>,
    last_try: Instant,
}

/// The server's rate and period, asked before the processor is built.
pub struct JackServer {
    client: Client,
    pub sample_rate: u32,
    pub period: usize,
}

/// Opens a client without starting a server; fails when none runs.
pub fn connect(name: &str) -> Result<JackServer, jack::Error> {
    let (client, _status) = Client::new(name, ClientOptions::NO_START_SERVER)?;
    Ok(JackServer {
        sample_rate: client.sample_rate(),
        period: client.buffer_size() as usize,
        client,
    })
}

impl JackServer {
    /// Registers djinn's ports, starts the processor and connects the outputs.
    pub fn start(
        self,
        processor: Processor,
        connections: &Connections,
    ) -> Result<JackDriver, jack::Error> {
        let client = self.client;
        let out = |name: &str| client.register_port(name, AudioOut::default());
        let master = [out("out_L")?, out("out_R")?];
        let mut groups = Vec::with_capacity(4);
        for group in Group::ALL {
            groups.push([
                out(&format!("{}_L", group.name()))?,
                out(&format!("{}_R", group.name()))?,
            ]);
        }
        let groups: [[Port<AudioOut>; 2]; 4] = groups
            .try_into()
            .map_err(|_| jack::Error::PortRegistrationError("groups".into()))?;
        let inputs = [
            client.register_port("in_L", AudioIn::default())?,
            client.register_port("in_R", AudioIn::default())?,
        ];
        let clock_in = client.register_port("clock_in", MidiIn::default())?;
        let clock_out = client.register_port("clock_out", MidiOut::default())?;
        let stats = Arc::new(JackStats::default());
        let timebase = Arc::new(TimebaseShare::default());
        let name = client.name().to_owned();
        let mixer = Mixer {
            processor,
            timebase: timebase.clone(),
            master,
            groups,
            inputs,
            clock_in,
            clock_out,
            stats: stats.clone(),
        };
        let client = client.activate_async(
            Notifier {
                stats: stats.clone(),
            },
            mixer,
        )?;
        let wanted = wanted(client.as_client(), &name, connections);
        let mut driver = JackDriver {
            client,
            timebase,
            stats,
            name,
            wanted,
            last_try: Instant::now(),
        };
        driver.keep_connections();
        for w in driver.wanted.iter().filter(|w| w.waiting) {
            tracing::info!(source = %w.source, target = %w.target, "connecting when both ports are there");
        }
        Ok(driver)
    }
}

/// The connections asked for: out_L/out_R to the given ports (the first two physical
/// playback ports when none are given), the clock sources to clock_in, clock_out to its
/// targets.
fn wanted(client: &Client, name: &str, connections: &Connections) -> Vec<Wanted> {
    let outputs: Vec<String> = if connections.outputs.is_empty() {
        client
            .ports(
                None,
                Some("32 bit float mono audio"),
                jack::PortFlags::IS_INPUT | jack::PortFlags::IS_PHYSICAL,
            )
            .into_iter()
            .take(2)
            .collect()
    } else {
        connections.outputs.clone()
    };
    let ours = |port: &str| format!("{name}:{port}");
    let outputs = ["out_L", "out_R"]
        .iter()
        .zip(outputs)
        .map(|(port, target)| (ours(port), target));
    let clock_in = connections
        .clock_in
        .iter()
        .map(|source| (source.clone(), ours("clock_in")));
    let clock_out = connections
        .clock_out
        .iter()
        .map(|target| (ours("clock_out"), target.clone()));
    outputs
        .chain(clock_in)
        .chain(clock_out)
        .map(|(source, target)| Wanted {
            source,
            target,
            waiting: true,
            failures: 0,
        })
        .collect()
}

impl JackDriver {
    /// Makes the wanted connections whose ports are both there, and marks those with a
    /// port gone as waiting for it.
    fn keep_connections(&mut self) {
        self.last_try = Instant::now();
        let client = self.client.as_client();
        for w in &mut self.wanted {
            let (source, target) = (w.source.as_str(), w.target.as_str());
            let Some(port) = client
                .port_by_name(source)
                .filter(|_| client.port_by_name(target).is_some())
            else {
                if !w.waiting {
                    tracing::info!(%source, %target, "a port went away; connecting again when it is back");
                    w.waiting = true;
                }
                continue;
            };
            if !w.waiting {
                continue;
            }
            if port.is_connected_to(target).unwrap_or(false) {
                w.waiting = false;
                w.failures = 0;
                continue;
            }
            match client.connect_ports_by_name(source, target) {
                Ok(()) => {
                    tracing::info!(%source, %target, "connected");
                    w.waiting = false;
                    w.failures = 0;
                }
                // A port registers before its client is active, and cannot be connected
                // until it is: only a connection still refused seconds later is reported.
                Err(e) => {
                    w.failures += 1;
                    if w.failures == FAILURES_REPORTED {
                        tracing::warn!(%source, %target, error = %e, "cannot connect; still trying every second");
                    }
                }
            }
        }
    }

    /// The connections asked for that are not made yet, as (source, target): a port is
    /// missing, or its client is not active yet.
    pub fn waiting_connections(&self) -> Vec<[String; 2]> {
        self.wanted
            .iter()
            .filter(|w| w.waiting)
            .map(|w| [w.source.clone(), w.target.clone()])
            .collect()
    }

    /// Looks at the wanted connections again when a port came or went, and every second
    /// while one waits. Called on the actor's tick.
    pub fn watch_connections(&mut self, now: Instant) {
        let changed = self.stats.ports_changed.swap(false, Ordering::Relaxed);
        let waiting = self.wanted.iter().any(|w| w.waiting);
        if changed || (waiting && now.duration_since(self.last_try) >= WAITING_RETRY) {
            self.keep_connections();
        }
    }

    /// Takes JACK's timebase (publishing djinn's bars, beats and tempo to every client), or
    /// gives it up.
    pub fn set_timebase_master(&self, on: bool) -> Result<(), String> {
        let raw = self.client.as_client().raw();
        let active = self.timebase.active.load(Ordering::Relaxed);
        if on && !active {
            let arg = Arc::as_ptr(&self.timebase) as *mut libc::c_void;
            // SAFETY: `raw` is this open client; `arg` points at the share, which lives in
            // `self` after the client, so it outlives every callback.
            let rc = unsafe {
                jack_sys::jack_set_timebase_callback(raw, 0, Some(timebase::publish), arg)
            };
            if rc != 0 {
                return Err(format!("JACK refused the timebase (error {rc})"));
            }
            self.timebase.active.store(true, Ordering::Relaxed);
            tracing::info!("JACK timebase master");
        } else if !on && active {
            // SAFETY: `raw` is this open client, which holds the timebase.
            unsafe { jack_sys::jack_release_timebase(raw) };
            self.timebase.active.store(false, Ordering::Relaxed);
            tracing::info!("JACK timebase released");
        }
        Ok(())
    }

    /// JACK's DSP load, percent.
    pub fn dsp_load(&self) -> f32 {
        self.client.as_client().cpu_load()
    }
}
