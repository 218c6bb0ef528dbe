//! `djinn shell` driven through a pseudo-terminal: keys typed, the screen read back.

use djinn_tests::{Djinnd, Options, bin, python};

/// Types each key line into `djinn shell` on a pty and waits for the text it must show.
const DRIVER: &str = r#"
import os, pty, select, sys, time

djinn, endpoint, events = sys.argv[1:4]
pid, fd = pty.fork()
if pid == 0:
    os.execv(djinn, [djinn, "--endpoint", endpoint, "--events", events, "--timeout", "60000", "shell"])

screen = b""
def pump(seconds):
    global screen
    ready, _, _ = select.select([fd], [], [], seconds)
    if ready:
        try:
            screen += os.read(fd, 65536)
        except OSError:
            return False
    return True

def expect(text, since, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text.encode() in screen[since:]:
            return
        if not pump(0.2):
            break
    sys.stdout.write(screen.decode(errors="replace"))
    sys.exit(f"\n--- the screen never showed {text!r}")

def key(line, *shows):
    since = len(screen)
    os.write(fd, line.encode() + b"\r")
    for text in shows:
        expect(text, since)

expect("set started", 0)
expect("Enter: DJ decides now", 0)
key("", "ok: decided now")
key("s drums,bass", "ok: stems drums,bass", "roles bass, drum")
key("b 140", "ok: bpm 140 ")
key("k F minor", "ok: key F minor")
key("y ambient", "ok: style ambient")
key("dark rolling bass", 'ok: "dark rolling bass"', 'you asked for "dark rolling bass"')
# The pending changes land on the next phrase, and the stream shows it.
expect("style downtempo_ambient", 0)
expect("140 BPM, F minor", 0)
expect("] phrase ", 0)
expect("- pad", 0)
key("q", "bye")
_, status = os.waitpid(pid, 0)
sys.stdout.write(screen.decode(errors="replace"))
sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)
"#;

#[test]
fn every_shell_key_reaches_the_daemon_and_shows_its_result() {
    let daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec!["--fast".into(), "--profile".into(), "uk_drill".into()],
        ..Options::default()
    });
    let out = python()
        .arg("-c")
        .arg(DRIVER)
        .arg(bin("djinn"))
        .arg(&daemon.control)
        .arg(&daemon.events)
        .output()
        .expect("run python3");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{screen}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
}
