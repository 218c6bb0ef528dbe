//! The audio actor's side of the clock: where the transport follows from, whether djinn
//! sends MIDI clock, and the `clock.*` and `transport.*` events made from what the mixer
//! reports.

use djinn_engine::clock::{ClockEvent, LockState};
use djinn_engine::mix::{ClockReport, ClockSource, Command};
use djinn_engine::transport::TransportChange;
use kameo::message::{Context, Message};
use serde::Serialize;
use serde_json::json;

use super::AudioActor;
use super::jack::JackDriver;
use crate::transport::SetTransport;

/// A tempo change of the followed clock smaller than this is not reported.
const TEMPO_REPORT_BPM: f64 = 0.05;

/// The clock settings from config, changed by `transport.set`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockSettings {
    pub source: ClockSource,
    /// Send MIDI clock on clock_out.
    pub master: bool,
    /// MIDI ports whose clock feeds clock_in.
    pub clock_in: Vec<String>,
    /// MIDI ports clock_out sends to.
    pub clock_out: Vec<String>,
    /// An ALSA sequencer input port (a substring of its name) whose clock is followed too,
    /// for hardware that JACK does not see.
    pub alsa_port: Option<String>,
}

/// What the actor knows of the clock between mixer reports.
#[derive(Debug, Clone)]
pub(super) struct ClockWatch {
    pub report: Option<ClockReport>,
    pub tempo: f64,
    /// The followed tempo last published (and handed to the transport actor).
    published_tempo: Option<f64>,
}

impl Default for ClockWatch {
    fn default() -> Self {
        Self {
            report: None,
            tempo: 0.0,
            published_tempo: None,
        }
    }
}

/// The clock section of `daemon.status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClockStatus {
    pub source: ClockSource,
    pub master_clock: bool,
    pub tempo: f64,
    /// idle, acquiring, locked or free_running (internal and jack sources: idle).
    pub lock: LockState,
    /// Standard error of the followed phase, milliseconds.
    pub phase_error_ms: Option<f64>,
    /// RMS jitter of the followed ticks against the loop's prediction, milliseconds.
    pub jitter_ms: Option<f64>,
    /// The ALSA sequencer port followed, or why none is (null when none is configured).
    pub alsa: Option<String>,
}

impl AudioActor {
    /// Sends the clock settings to a new mixer.
    pub(super) fn apply_clock(&mut self) {
        let settings = self.args.clock.clone();
        if let Some(handle) = self.handle.as_mut() {
            let _ = handle.send(Command::SetClockSource(settings.source));
            let _ = handle.send(Command::SetMasterClock(settings.master));
        }
    }

    /// Takes JACK's timebase while djinn is the master clock (and does not follow JACK
    /// transport itself), gives it up otherwise.
    pub(super) fn lead_jack_timebase(&self, driver: &JackDriver) {
        let settings = &self.args.clock;
        let lead = settings.master && settings.source != ClockSource::Jack;
        if let Err(e) = driver.set_timebase_master(lead) {
            tracing::warn!(error = %e, "cannot be JACK's timebase master");
        }
    }

    /// Publishes a clock event of the mixer.
    pub(super) fn clock_event(&mut self, event: ClockEvent) {
        let position = self.args.transport_watch.borrow().position();
        match event {
            ClockEvent::Locked { tempo, after_beats } => {
                tracing::info!(tempo, after_beats, "locked to the external clock");
                self.events().publish(
                    "clock.locked",
                    json!({ "tempo": round(tempo), "after_beats": after_beats }),
                );
                self.follow_tempo(tempo);
            }
            ClockEvent::Lost { tempo } => {
                tracing::warn!(tempo, "external clock lost: free-running");
                self.events().publish(
                    "clock.lost",
                    json!({ "tempo": round(tempo), "free_running": true }),
                );
            }
            ClockEvent::Started => {
                self.events().publish(
                    "transport.started",
                    json!({ "from": "start", "beats": 0.0 }),
                );
            }
            ClockEvent::Continued { beats } => {
                self.events().publish(
                    "transport.started",
                    json!({ "from": "continue", "beats": beats }),
                );
            }
            ClockEvent::Stopped { beats } => {
                self.events().publish(
                    "transport.stopped",
                    json!({ "beats": beats, "position": position }),
                );
            }
        }
    }

    /// Takes in the clock part of a position report.
    pub(super) fn clock_report(&mut self, report: ClockReport, tempo: f64) {
        self.clock.report = Some(report);
        self.clock.tempo = tempo;
        if report.lock == LockState::Locked
            && self
                .clock
                .published_tempo
                .is_some_and(|last| (tempo - last).abs() > TEMPO_REPORT_BPM)
        {
            self.events()
                .publish("clock.tempo", json!({ "tempo": round(tempo) }));
            self.follow_tempo(tempo);
        }
    }

    /// Hands a followed tempo to the transport actor, so loops are made at it.
    fn follow_tempo(&mut self, tempo: f64) {
        self.clock.published_tempo = Some(tempo);
        let change = TransportChange {
            tempo: Some((tempo * 100.0).round() / 100.0),
            ..TransportChange::default()
        };
        let set = SetTransport {
            change,
            source: "clock".into(),
        };
        let _ = self.args.transport.tell(set).try_send();
    }

    pub(super) fn clock_status(&self) -> ClockStatus {
        let settings = &self.args.clock;
        let rate = f64::from(self.sample_rate.max(1));
        let report = self.clock.report.filter(|_| self.handle.is_some());
        let following = settings.source == ClockSource::Midi;
        let ms = |frames: f64| (frames.is_finite() && following).then(|| frames * 1000.0 / rate);
        ClockStatus {
            source: settings.source,
            master_clock: settings.master,
            tempo: round(if report.is_some() {
                self.clock.tempo
            } else {
                self.args.transport_watch.borrow().tempo
            }),
            lock: report.map_or(LockState::Idle, |r| r.lock),
            phase_error_ms: report.and_then(|r| ms(r.phase_error_frames)),
            jitter_ms: report.and_then(|r| ms(r.jitter_frames)),
            alsa: self.alsa_state.clone(),
        }
    }
}

fn round(tempo: f64) -> f64 {
    (tempo * 1000.0).round() / 1000.0
}

/// Changes where the transport follows from and whether djinn sends MIDI clock; fields
/// left out keep their value.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetClock {
    pub source: Option<ClockSource>,
    pub master: Option<bool>,
}

impl Message<SetClock> for AudioActor {
    type Reply = ();

    async fn handle(&mut self, msg: SetClock, _: &mut Context<Self, Self::Reply>) {
        if let Some(source) = msg.source {
            self.args.clock.source = source;
            self.clock = ClockWatch::default();
        }
        if let Some(master) = msg.master {
            self.args.clock.master = master;
        }
        self.apply_clock();
        if let super::Driver::Jack(driver) = &self.driver {
            self.lead_jack_timebase(driver);
        }
        tracing::info!(source = ?self.args.clock.source, master = self.args.clock.master, "clock set");
    }
}

/// Glides the mixer's tempo to `tempo` over `beats` beats (the transport actor already
/// holds the new tempo).
#[derive(Debug, Clone, Copy)]
pub struct RampTempo {
    pub tempo: f64,
    pub beats: f64,
}

impl Message<RampTempo> for AudioActor {
    type Reply = ();

    async fn handle(&mut self, msg: RampTempo, _: &mut Context<Self, Self::Reply>) {
        if let Some(handle) = self.handle.as_mut() {
            let _ = handle.send(Command::RampTempo {
                tempo: msg.tempo,
                beats: msg.beats,
            });
        }
    }
}
