//! The one place a Rhai engine is built for user scripts.
//!
//! [`Sandbox::new`] returns an engine that cannot touch files, the network or processes
//! (no `import`, no `eval`), with limits on operations, call depth, expression depth,
//! string, array and map sizes, and a wall-clock budget per call enforced from
//! `on_progress`. Scripts compile to an AST once, when they are loaded; errors carry the
//! script's name and line, limit errors included (see `Trace`).
//!
//! [`Record`] is the one policy for a script version that fails when it runs: the owner of
//! a script (the director, the generator) rolls back to the last version that worked.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rhai::{AST, Dynamic, Engine, EvalAltResult, FuncArgs, Position, Scope};

/// Limits every script runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScriptLimits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_len: usize,
    pub max_array_len: usize,
    pub max_map_len: usize,
    /// Wall-clock budget of one call.
    pub budget: Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            max_operations: 2_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_len: 64 * 1024,
            max_array_len: 10_000,
            max_map_len: 10_000,
            budget: Duration::from_millis(250),
        }
    }
}

/// What went wrong loading or running a script.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScriptError {
    /// The script does not compile; the previous version (if any) stays in use.
    #[error("{script}:{line}: {message}")]
    Compile {
        script: String,
        line: usize,
        message: String,
    },
    /// The script failed while running.
    #[error("{script}:{line}: in {function}(): {message}")]
    Runtime {
        script: String,
        function: String,
        line: usize,
        message: String,
    },
    /// The script file could not be read.
    #[error("cannot read {script}: {message}")]
    Read { script: String, message: String },
}

impl ScriptError {
    /// The body of the `script.error` event for this error: file, line and message.
    pub fn event(&self) -> serde_json::Value {
        let (script, line) = match self {
            ScriptError::Compile { script, line, .. }
            | ScriptError::Runtime { script, line, .. } => (script.as_str(), *line),
            ScriptError::Read { script, .. } => (script.as_str(), 0),
        };
        serde_json::json!({ "script": script, "line": line, "message": self.to_string() })
    }
}

/// The deadline of the call in progress, in microseconds since `epoch`, and where the
/// call is.
#[derive(Debug)]
struct Budget {
    epoch: Instant,
    deadline_us: AtomicU64,
    trace: Trace,
}

/// The line and column the call in progress reached last.
///
/// NOTE: Rhai reports the errors that stop a script (too many operations, stack overflow,
/// data too large, terminated from `on_progress`) with the position where they arose, then
/// overwrites it with the call site at every function boundary: a function called from Rust
/// has none, so every limit error would say line 0. A debugger that steps through every node
/// keeps the last position here instead; it costs a callback per node, which is small beside
/// what a script's call is allowed (and a runaway script is stopped by its limits anyway).
#[derive(Debug, Default)]
struct Trace(AtomicU64);

impl Trace {
    fn record(&self, position: Position) {
        if let (Some(line), column) = (position.line(), position.position().unwrap_or(0)) {
            self.0
                .store(((line as u64) << 32) | column as u64, Ordering::Relaxed);
        }
    }

    fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// The last (line, column) reached; `None` before the first.
    fn last(&self) -> Option<(usize, usize)> {
        let packed = self.0.load(Ordering::Relaxed);
        (packed != 0).then_some(((packed >> 32) as usize, (packed & 0xffff_ffff) as usize))
    }
}

impl Budget {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// A hardened Rhai engine. One per actor; calls run one at a time.
pub struct Sandbox {
    engine: Engine,
    budget: Arc<Budget>,
    limits: ScriptLimits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish()
    }
}

fn line_of(position: Position) -> usize {
    position.line().unwrap_or(0)
}

impl Sandbox {
    pub fn new(limits: ScriptLimits) -> Sandbox {
        Self::with_api(limits, |_| {})
    }

    /// A sandbox whose scripts may also call the functions `api` registers (pure functions
    /// over their arguments: the sandbox's promises hold only if they touch nothing else).
    pub fn with_api(limits: ScriptLimits, api: impl FnOnce(&mut Engine)) -> Sandbox {
        let mut engine = Engine::new();
        api(&mut engine);
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
            .set_max_string_size(limits.max_string_len)
            .set_max_array_size(limits.max_array_len)
            .set_max_map_size(limits.max_map_len)
            .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.disable_symbol("eval");
        engine.on_print(|text| tracing::info!(target: "script", "{text}"));
        engine.on_debug(|text, source, pos| {
            tracing::debug!(target: "script", source = source.unwrap_or(""), line = line_of(pos), "{text}");
        });
        let budget = Arc::new(Budget {
            epoch: Instant::now(),
            deadline_us: AtomicU64::new(u64::MAX),
            trace: Trace::default(),
        });
        let watch = budget.clone();
        engine.on_progress(move |_| {
            (watch.now_us() > watch.deadline_us.load(Ordering::Relaxed))
                .then(|| Dynamic::from("the script ran past its time budget"))
        });
        let tracer = budget.clone();
        // NOTE: Rhai marks the debugger API "volatile", not deprecated; it is pinned with the
        // crate's version, and the unit tests catch a change in what it reports.
        #[allow(deprecated)]
        engine.register_debugger(
            |_, debugger| debugger,
            move |_, event, _, _, position| {
                // Only steps: a function's exit (even with the error that stops it) reports
                // the end of its body, which is not where the script was.
                if let rhai::debugger::DebuggerEvent::Step = event {
                    tracer.trace.record(position);
                }
                Ok(rhai::debugger::DebuggerCommand::StepInto)
            },
        );
        Sandbox {
            engine,
            budget,
            limits,
        }
    }

    /// Compiles `source`, naming it `script` in errors.
    pub fn compile(&self, script: &str, source: &str) -> Result<AST, ScriptError> {
        self.engine
            .compile(source)
            .map_err(|e| ScriptError::Compile {
                script: script.to_owned(),
                line: line_of(e.position()),
                message: e.to_string(),
            })
    }

    /// Reads and compiles the script at `path`.
    pub fn compile_file(&self, path: &Path) -> Result<AST, ScriptError> {
        let script = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ScriptError::Read {
            script: script.clone(),
            message: e.to_string(),
        })?;
        self.compile(&script, &source)
    }

    /// Whether `ast` defines `function` with `arity` parameters.
    pub fn has_function(ast: &AST, function: &str, arity: usize) -> bool {
        ast.iter_functions()
            .any(|f| f.name == function && f.params.len() == arity)
    }

    pub fn limits(&self) -> ScriptLimits {
        self.limits
    }

    /// Calls `function` of `ast` within the wall-clock budget.
    pub fn call(
        &self,
        script: &str,
        ast: &AST,
        function: &str,
        args: impl FuncArgs,
    ) -> Result<Dynamic, ScriptError> {
        let budget_us = self.limits.budget.as_micros() as u64;
        self.budget.trace.clear();
        self.budget
            .deadline_us
            .store(self.budget.now_us() + budget_us, Ordering::Relaxed);
        let result = self
            .engine
            .call_fn::<Dynamic>(&mut Scope::new(), ast, function, args);
        self.budget.deadline_us.store(u64::MAX, Ordering::Relaxed);
        result.map_err(|e: Box<EvalAltResult>| {
            let inner = e.unwrap_inner();
            let message = match inner {
                EvalAltResult::ErrorTerminated(reason, _) => reason.to_string(),
                EvalAltResult::ErrorTooManyOperations(_) => format!(
                    "the script ran past its limit of {} operations",
                    self.limits.max_operations
                ),
                EvalAltResult::ErrorStackOverflow(_) => format!(
                    "the script nested calls deeper than its limit of {}",
                    self.limits.max_call_levels
                ),
                other => other.to_string(),
            };
            // The innermost error knows best where it arose, unless Rhai overwrote it (limit
            // errors): then the trace says where the script was when it was stopped.
            let line = match (inner.position().line(), self.budget.trace.last()) {
                (_, Some((line, _))) if inner.is_system_exception() => line,
                (Some(line), _) => line,
                (None, traced) => traced.map_or(0, |(line, _)| line),
            };
            ScriptError::Runtime {
                script: script.to_owned(),
                function: function.to_owned(),
                line,
                message,
            }
        })
    }
}

/// How a script version has fared since it was loaded: the rule for when its owner rolls
/// back to the last version that worked.
///
/// A version that fails its first call is rolled back at once (it never worked); one that
/// has worked is rolled back after [`Record::ROLL_BACK_AFTER`] failed calls in a row, so a
/// call that runs past its time budget once on a loaded host does not throw away a good
/// script, while one that now fails on every call does not silence the set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// The version completed a call.
    pub proven: bool,
    /// Calls failed since the last that completed.
    pub failures_in_row: u32,
}

impl Record {
    /// Failed calls in a row after which a version that had worked is rolled back.
    pub const ROLL_BACK_AFTER: u32 = 3;

    /// A record for a version known to work (a built-in script, a rolled-back one).
    pub fn proven() -> Record {
        Record {
            proven: true,
            failures_in_row: 0,
        }
    }

    pub fn succeeded(&mut self) {
        self.proven = true;
        self.failures_in_row = 0;
    }

    /// Counts a failed call; true when the version should be rolled back.
    pub fn failed(&mut self) -> bool {
        self.failures_in_row += 1;
        !self.proven || self.failures_in_row >= Self::ROLL_BACK_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runaway_loop_is_stopped() {
        let sandbox = Sandbox::new(ScriptLimits::default());
        let ast = sandbox.compile("spin", "fn run() { loop { } }").unwrap();
        let err = sandbox.call("spin", &ast, "run", ()).unwrap_err();
        // Whichever limit comes first on this host: the operations or the time budget.
        let text = err.to_string();
        assert!(
            text.contains("operations") || text.contains("time budget"),
            "{err}"
        );
        assert!(text.starts_with("spin:1:"), "{err}");
    }

    #[test]
    fn the_wall_clock_budget_holds() {
        let limits = ScriptLimits {
            max_operations: u64::MAX,
            budget: Duration::from_millis(50),
            ..ScriptLimits::default()
        };
        let sandbox = Sandbox::new(limits);
        let ast = sandbox
            .compile("slow", "fn run() { let x = 0; loop { x += 1; } }")
            .unwrap();
        let started = Instant::now();
        let err = sandbox.call("slow", &ast, "run", ()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("time budget"), "{err}");
    }

    #[test]
    fn no_imports_and_no_eval() {
        let sandbox = Sandbox::new(ScriptLimits::default());
        let ast = sandbox
            .compile("imp", "fn run() { import \"/etc/passwd\" as p; 1 }")
            .unwrap();
        assert!(sandbox.call("imp", &ast, "run", ()).is_err());
        assert!(sandbox.compile("ev", "fn run() { eval(\"1\") }").is_err());
    }

    #[test]
    fn errors_name_the_script_and_line() {
        let sandbox = Sandbox::new(ScriptLimits::default());
        let err = sandbox
            .compile("moods/x.rhai", "fn f() {\n  let = 3;\n}")
            .unwrap_err();
        assert!(err.to_string().starts_with("moods/x.rhai:2:"), "{err}");
        let ast = sandbox.compile("y", "fn f() {\n\n  1 / 0\n}").unwrap();
        let err = sandbox.call("y", &ast, "f", ()).unwrap_err();
        assert!(err.to_string().starts_with("y:3: in f()"), "{err}");
    }

    /// Each limit stops the script where it was: the error names that line, not 0.
    #[test]
    fn limit_errors_name_the_line_where_the_script_was_stopped() {
        let sandbox = Sandbox::new(ScriptLimits {
            max_operations: 50_000,
            ..ScriptLimits::default()
        });
        let cases = [
            (
                "fn run() {\n  let x = 0;\n  loop {\n    x += 1;\n  }\n}",
                3..=4,
            ),
            (
                "fn spin(n) {\n  while true {\n    n += 1;\n  }\n}\nfn run() {\n  spin(0)\n}",
                2..=3,
            ),
            (
                "fn dive(n) {\n\n  dive(n + 1)\n}\nfn run() { dive(0) }",
                3..=3,
            ),
            (
                "fn run() {\n  let s = \"x\";\n  loop {\n    s += s;\n  }\n}",
                3..=4,
            ),
            (
                "fn run() {\n  let a = [];\n  loop {\n    a.push(1);\n  }\n}",
                3..=4,
            ),
        ];
        for (source, lines) in cases {
            let ast = sandbox.compile("limits", source).unwrap();
            let err = sandbox.call("limits", &ast, "run", ()).unwrap_err();
            let ScriptError::Runtime { line, .. } = &err else {
                panic!("{err}");
            };
            assert!(lines.contains(line), "{source}\n-> {err}");
        }
        let timed = Sandbox::new(ScriptLimits {
            max_operations: u64::MAX,
            budget: Duration::from_millis(20),
            ..ScriptLimits::default()
        });
        let ast = timed
            .compile(
                "slow",
                "fn run() {\n  let x = 0;\n  loop {\n    x += 1;\n  }\n}",
            )
            .unwrap();
        let err = timed.call("slow", &ast, "run", ()).unwrap_err();
        assert!(
            err.to_string().starts_with("slow:3:") || err.to_string().starts_with("slow:4:"),
            "{err}"
        );
        assert!(err.to_string().contains("time budget"), "{err}");
    }

    #[test]
    fn a_version_that_never_worked_rolls_back_at_once_a_proven_one_after_three() {
        let mut fresh = Record::default();
        assert!(fresh.failed());
        let mut good = Record::default();
        good.succeeded();
        assert!(!good.failed());
        assert!(!good.failed());
        assert!(good.failed());
        good.succeeded();
        assert!(!good.failed());
    }

    #[test]
    fn huge_strings_are_refused() {
        let sandbox = Sandbox::new(ScriptLimits::default());
        let ast = sandbox
            .compile("big", "fn run() { let s = \"x\"; loop { s += s; } }")
            .unwrap();
        assert!(sandbox.call("big", &ast, "run", ()).is_err());
    }
}
