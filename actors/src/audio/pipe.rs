//! Pipe mode, the worker side: a thread that runs an external command and feeds it the
//! inputs' blocks on stdin, reading the processed blocks back from its stdout.
//!
//! Framing, both ways, for every block: a 16-byte little-endian header (`b"DJNP"`, the
//! block's sequence number as u32, its frame count as u32, the sample rate as u32), then
//! that many interleaved stereo f32 frames. The command answers each block with the same
//! header and as many frames. A command that dies, stalls (no answer within
//! [`STALL`]), or answers with another sequence or length is killed; the mixer plays the
//! inputs dry meanwhile (it never waits), a `pipe` event says why, and the command is
//! started again after a backoff that doubles up to [`MAX_BACKOFF`].

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::events::EventSink;
use djinn_engine::mix::pipe::{PipeBlock, PipeEnds};

/// The magic that starts every block header.
pub const MAGIC: &[u8; 4] = b"DJNP";
/// Header length in bytes.
pub const HEADER: usize = 16;
/// An answer later than this is a stall.
pub const STALL: Duration = Duration::from_millis(500);
/// The first wait before a restart, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long a command whose pipes broke is given to finish exiting, so that its exit is
/// reported as such.
const EXIT_GRACE: Duration = Duration::from_millis(250);
/// Running this long without trouble resets the backoff.
const SETTLED: Duration = Duration::from_secs(10);

/// What the pipe is doing, for `daemon.status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipeState {
    /// running, bypassed (waiting to restart) or stopped.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub restarts: u64,
    /// Why it was last bypassed.
    pub last_error: Option<String>,
}

/// A running pipe worker; dropping it stops the command.
pub struct PipeWorker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<PipeEnds>>,
    state: Arc<Mutex<PipeState>>,
    stats: Arc<djinn_engine::mix::pipe::PipeStats>,
    pub block: usize,
}

impl PipeWorker {
    /// Starts `command` (run by `sh -c`) on the pipe's worker ends.
    pub fn start(
        command: String,
        ends: PipeEnds,
        sample_rate: u32,
        events: EventSink,
    ) -> PipeWorker {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(PipeState {
            state: "starting",
            ..PipeState::default()
        }));
        let stats = ends.stats.clone();
        let block = ends.block;
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::Builder::new()
                .name("djinn-pipe".into())
                .spawn(move || run(&command, ends, sample_rate, &events, &stop, &state))
                .ok()
        };
        PipeWorker {
            stop,
            thread,
            state,
            stats,
            block,
        }
    }

    pub fn state(&self) -> PipeState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Frames played from the command and dry.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stats.processed_frames.load(Ordering::Relaxed),
            self.stats.bypassed_frames.load(Ordering::Relaxed),
        )
    }
}

impl PipeWorker {
    /// Stops the command and gives back the pipe's ends, for the next command.
    pub fn stop(mut self) -> Option<PipeEnds> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for PipeWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A reply, or why there is none.
type Reply = Result<(u32, Vec<[f32; 2]>), String>;

fn set_state(state: &Mutex<PipeState>, f: impl FnOnce(&mut PipeState)) {
    f(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
}

/// Hands every played block back for filling, and throws away the inputs (they play dry).
fn recycle(ends: &mut PipeEnds, drop_inputs: bool) {
    while let Ok(block) = ends.used.pop() {
        let _ = ends.empties.push(block);
    }
    if drop_inputs {
        while let Ok(block) = ends.inputs.pop() {
            let _ = ends.empties.push(block);
        }
    }
}

/// Sleeps `time` in small steps, keeping the blocks moving; false when told to stop.
fn wait(time: Duration, ends: &mut PipeEnds, stop: &AtomicBool) -> bool {
    let until = Instant::now() + time;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        recycle(ends, true);
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn run(
    command: &str,
    mut ends: PipeEnds,
    rate: u32,
    events: &EventSink,
    stop: &AtomicBool,
    state: &Mutex<PipeState>,
) -> PipeEnds {
    let mut backoff = FIRST_BACKOFF;
    let restarts = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let reason = match Session::start(command) {
            Ok(mut session) => {
                let pid = session.child.id();
                set_state(state, |s| {
                    s.state = "running";
                    s.pid = Some(pid);
                });
                events.publish(
                    "pipe",
                    json!({ "kind": "started", "command": command, "pid": pid }),
                );
                tracing::info!(command, pid, "pipe command started");
                let reason = session.serve(&mut ends, rate, stop);
                session.kill();
                reason
            }
            Err(e) => Some(format!("cannot start: {e}")),
        };
        let Some(reason) = reason else {
            break;
        };
        if started.elapsed() >= SETTLED {
            backoff = FIRST_BACKOFF;
        }
        let n = restarts.fetch_add(1, Ordering::Relaxed) + 1;
        set_state(state, |s| {
            s.state = "bypassed";
            s.pid = None;
            s.restarts = n;
            s.last_error = Some(reason.clone());
        });
        tracing::warn!(command, %reason, retry_ms = backoff.as_millis() as u64, "pipe bypassed");
        events.publish(
            "pipe",
            json!({ "kind": "bypassed", "reason": reason, "retry_ms": backoff.as_millis() as u64 }),
        );
        if !wait(backoff, &mut ends, stop) {
            break;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    set_state(state, |s| {
        s.state = "stopped";
        s.pid = None;
    });
    recycle(&mut ends, true);
    ends
}

/// One run of the command.
struct Session {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Reply>,
}

impl Session {
    fn start(command: &str) -> std::io::Result<Session> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            // Its own process group, so that a kill takes whatever the shell started too.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        let mut stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        let (tx, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name("djinn-pipe-read".into())
            .spawn(move || {
                loop {
                    let reply = read_reply(&mut stdout);
                    let failed = reply.is_err();
                    if tx.send(reply).is_err() || failed {
                        break;
                    }
                }
            })?;
        Ok(Session {
            child,
            stdin,
            replies,
        })
    }

    /// Feeds blocks until told to stop (`None`) or the command fails (why).
    fn serve(&mut self, ends: &mut PipeEnds, rate: u32, stop: &AtomicBool) -> Option<String> {
        let mut sequence = 0u32;
        let mut bytes = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            recycle(ends, false);
            let Ok(mut block) = ends.inputs.pop() else {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Some(format!("the command exited ({status})"));
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            encode(&block, sequence, rate, &mut bytes);
            if let Err(e) = self
                .stdin
                .write_all(&bytes)
                .and_then(|()| self.stdin.flush())
            {
                let _ = ends.empties.push(block);
                return Some(self.exited_or(format!("the command died ({e})")));
            }
            let reply = match self.replies.recv_timeout(STALL) {
                Ok(reply) => reply,
                Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                    "the command stalled (no answer in {} ms)",
                    STALL.as_millis()
                )),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err("the command died".into()),
            };
            match reply {
                Ok((seq, frames)) if seq == sequence && frames.len() == block.frames.len() => {
                    block.frames.copy_from_slice(&frames);
                    if let Err(rtrb::PushError::Full(block)) = ends.outputs.push(block) {
                        let _ = ends.empties.push(block);
                    }
                }
                Ok((seq, frames)) => {
                    let _ = ends.empties.push(block);
                    return Some(format!(
                        "wrong answer: block {seq} of {} frames for block {sequence} of {}",
                        frames.len(),
                        ends.block
                    ));
                }
                Err(e) => {
                    let _ = ends.empties.push(block);
                    return Some(self.exited_or(e));
                }
            }
            sequence = sequence.wrapping_add(1);
        }
    }

    /// Why the session ended: the command's exit when it has exited (or does within
    /// [`EXIT_GRACE`]), else `other`. A command that exits is seen first as a broken pipe or
    /// a closed output whenever a block was on its way, which depends on timing alone; its
    /// exit status is the reason worth reporting.
    fn exited_or(&mut self, other: String) -> String {
        let until = Instant::now() + EXIT_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!("the command exited ({status})"),
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return other,
            }
        }
    }

    fn kill(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group the command was
            // started in; it touches no memory of ours.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A block as the command reads it.
fn encode(block: &PipeBlock, sequence: u32, rate: u32, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(block.frames.len() as u32).to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    for f in &block.frames {
        out.extend_from_slice(&f[0].to_le_bytes());
        out.extend_from_slice(&f[1].to_le_bytes());
    }
}

/// Most frames an answer may announce (a bad header must not make djinn allocate wildly).
const MAX_FRAMES: u32 = 1 << 20;

fn read_reply(stdout: &mut impl Read) -> Reply {
    let mut header = [0u8; HEADER];
    stdout
        .read_exact(&mut header)
        .map_err(|_| "the command closed its output".to_owned())?;
    if &header[..4] != MAGIC {
        return Err("wrong answer: no DJNP header".into());
    }
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (sequence, frames) = (word(4), word(8));
    if frames > MAX_FRAMES {
        return Err(format!("wrong answer: {frames} frames"));
    }
    let mut body = vec![0u8; frames as usize * 8];
    stdout
        .read_exact(&mut body)
        .map_err(|_| "the command closed its output mid-block".to_owned())?;
    let samples: Vec<[f32; 2]> = body
        .chunks_exact(8)
        .map(|c| {
            [
                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            ]
        })
        .collect();
    Ok((sequence, samples))
}
