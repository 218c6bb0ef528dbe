//! The one place a Rhai engine is built for user scripts.
//!
//! [`Sandbox::new`] returns an engine that cannot touch files, the network or processes
//! (no `import`, no `eval`), with limits on operations, call depth, expression depth,
//! string, array and map sizes, and a wall-clock budget per call enforced from
//! `on_progress`. Scripts compile to an AST once, when they are loaded; errors carry the
//! script's name and line.

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

/// The deadline of the call in progress, in microseconds since `epoch`.
#[derive(Debug)]
struct Budget {
    epoch: Instant,
    deadline_us: AtomicU64,
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
        });
        let watch = budget.clone();
        engine.on_progress(move |_| {
            (watch.now_us() > watch.deadline_us.load(Ordering::Relaxed))
                .then(|| Dynamic::from("the script ran past its time budget"))
        });
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
        self.budget
            .deadline_us
            .store(self.budget.now_us() + budget_us, Ordering::Relaxed);
        let result = self
            .engine
            .call_fn::<Dynamic>(&mut Scope::new(), ast, function, args);
        self.budget.deadline_us.store(u64::MAX, Ordering::Relaxed);
        result.map_err(|e: Box<EvalAltResult>| {
            let message = match &*e {
                EvalAltResult::ErrorTerminated(reason, _) => reason.to_string(),
                EvalAltResult::ErrorTooManyOperations(_) => format!(
                    "the script ran past its limit of {} operations",
                    self.limits.max_operations
                ),
                other => other.to_string(),
            };
            ScriptError::Runtime {
                script: script.to_owned(),
                function: function.to_owned(),
                line: line_of(e.position()),
                message,
            }
        })
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
        assert!(err.to_string().contains("operations"), "{err}");
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

    #[test]
    fn huge_strings_are_refused() {
        let sandbox = Sandbox::new(ScriptLimits::default());
        let ast = sandbox
            .compile("big", "fn run() { let s = \"x\"; loop { s += s; } }")
            .unwrap();
        assert!(sandbox.call("big", &ast, "run", ()).is_err());
    }
}
