//! The JACK driver: djinn's client, its ports, and the mixer inside the process callback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use djinn_engine::mix::{Group, Outputs, Processor};
use jack::{AudioIn, AudioOut, Client, ClientOptions, Control, Port, ProcessScope};

/// Counters the callback and JACK's notification thread update for the actor to read.
#[derive(Debug, Default)]
pub struct JackStats {
    pub xruns: AtomicU64,
    /// Longest callback so far, microseconds.
    pub longest_callback_us: AtomicU64,
    /// Set when the server shut the client down.
    pub server_gone: AtomicBool,
}

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
}

struct Mixer {
    processor: Processor,
    master: [Port<AudioOut>; 2],
    groups: [[Port<AudioOut>; 2]; 4],
    _inputs: [Port<AudioIn>; 2],
    stats: Arc<JackStats>,
}

impl jack::ProcessHandler for Mixer {
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    fn process(&mut self, client: &Client, ps: &ProcessScope) -> Control {
        // NOTE: jack_get_time reads the monotonic clock through the vDSO: no system call.
        let start = client.time();
        let [ml, mr] = &mut self.master;
        let [g0, g1, g2, g3] = &mut self.groups;
        let mut outputs = Outputs {
            master: [ml.as_mut_slice(ps), mr.as_mut_slice(ps)],
            groups: [pair(g0, ps), pair(g1, ps), pair(g2, ps), pair(g3, ps)],
        };
        let processor = &mut self.processor;
        #[cfg(debug_assertions)]
        assert_no_alloc::assert_no_alloc(|| processor.process(&mut outputs));
        #[cfg(not(debug_assertions))]
        processor.process(&mut outputs);
        let took = client.time().saturating_sub(start);
        self.stats
            .longest_callback_us
            .fetch_max(took, Ordering::Relaxed);
        Control::Continue
    }
}

fn pair<'a>(ports: &'a mut [Port<AudioOut>; 2], ps: &'a ProcessScope) -> [&'a mut [f32]; 2] {
    let [l, r] = ports;
    [l.as_mut_slice(ps), r.as_mut_slice(ps)]
}

/// A running JACK client; dropping it closes the client.
pub struct JackDriver {
    client: jack::AsyncClient<Notifier, Mixer>,
    pub stats: Arc<JackStats>,
    pub name: String,
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
        connect_to: &[String],
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
        let stats = Arc::new(JackStats::default());
        let name = client.name().to_owned();
        let mixer = Mixer {
            processor,
            master,
            groups,
            _inputs: inputs,
            stats: stats.clone(),
        };
        let client = client.activate_async(
            Notifier {
                stats: stats.clone(),
            },
            mixer,
        )?;
        let driver = JackDriver {
            client,
            stats,
            name,
        };
        driver.connect_outputs(connect_to);
        Ok(driver)
    }
}

impl JackDriver {
    /// Connects out_L/out_R to the given ports, or to the first two physical playback
    /// ports when none are given.
    fn connect_outputs(&self, connect_to: &[String]) {
        let client = self.client.as_client();
        let targets: Vec<String> = if connect_to.is_empty() {
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
            connect_to.to_vec()
        };
        for (source, target) in ["out_L", "out_R"].iter().zip(&targets) {
            let source = format!("{}:{source}", self.name);
            match client.connect_ports_by_name(&source, target) {
                Ok(()) => tracing::info!(%source, %target, "connected"),
                Err(e) => tracing::warn!(%source, %target, error = %e, "cannot connect"),
            }
        }
    }

    /// JACK's DSP load, percent.
    pub fn dsp_load(&self) -> f32 {
        self.client.as_client().cpu_load()
    }
}
