//! An MCP server (Model Context Protocol, stdio) that lets coding agents use what
//! Chronicle recorded: list functions and signatures, query calls, analyse errors, latency
//! and drift, export examples, generate regression tests and replay calls against a build.
//! Built on the official Rust SDK (`rmcp`); feature `mcp`.
//!
//! Every tool answers with JSON text (the same objects as `chronicle ask` and the export
//! format) and reports bad input as a tool error whose message says what to do.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::analysis::{self, CallFilter, Period, Scope};
use crate::replay::{IgnoreRules, ReplayEngine, ReplayTarget};
use crate::storage::{NoSuchFunction, Storage, match_function};
use crate::testgen::{BehaviorAgent, GenerateOptions, TestLanguage};

/// Makes a replay target for a binary (supplied by the platform: on Linux the CLI passes
/// `chronicle_agent::replay::NativeTarget`). Errors are messages for the agent.
pub type Replayer = dyn Fn(&std::path::Path) -> Result<Box<dyn ReplayTarget>, String> + Send + Sync;

/// The server: one store, shared by the tools.
#[derive(Clone)]
pub struct ChronicleMcp {
    storage: Arc<Mutex<Box<dyn Storage>>>,
    replayer: Option<Arc<Replayer>>,
    #[allow(dead_code)] // Read by the code `tool_handler` generates.
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for ChronicleMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChronicleMcp").finish_non_exhaustive()
    }
}

/// The server could not run.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("starting the MCP runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("MCP session: {0}")]
    Session(String),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FunctionArg {
    /// Recorded function name: full (`orders::process_order`) or its last part when unique
    /// (`process_order`). `list_functions` lists them.
    pub function: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct QueryArgs {
    /// Recorded function name (full, or its last part when unique).
    pub function: String,
    /// Only failed calls (status `error` or `unwound`).
    #[serde(default)]
    pub errors: bool,
    /// Only calls since then: `30m`, `24h`, `7d`, `2w`, a date `2026-11-01` or an RFC 3339 time.
    pub since: Option<String>,
    /// Conditions on argument values, each `PATH=VALUE` (`order.customer.name=alice`,
    /// `items[0].qty=3`); all must hold.
    #[serde(default, rename = "where")]
    pub conditions: Vec<String>,
    /// At most this many calls, newest first (default 20).
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SlowestArgs {
    /// Recorded function name (full, or its last part when unique).
    pub function: String,
    /// How many of the slowest calls to return (default 10).
    pub n: Option<usize>,
    /// Only calls since then: `24h`, `7d`, a date or an RFC 3339 time.
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ErrorArgs {
    /// Recorded function name (full, or its last part when unique).
    pub function: String,
    /// Only calls since then: `24h`, `7d`, a date or an RFC 3339 time.
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DriftArgs {
    /// Recorded function name (full, or its last part when unique).
    pub function: String,
    /// Compare two builds: the older build ID (or a prefix of it, as `list_functions` shows).
    pub before_build: Option<String>,
    /// The newer build ID (or prefix). Give both builds, or neither.
    pub after_build: Option<String>,
    /// Without builds: compare the calls since then (`24h`, `7d`, a date) with the same
    /// length of time just before. Default `7d`.
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ExamplesArgs {
    /// Recorded function name (full, or its last part when unique).
    pub function: String,
    /// How many distinct example calls (default 5).
    pub count: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GenerateArgs {
    /// Recorded function name (full, or its last part when unique).
    pub function: String,
    /// Directory to write the test file into (created when missing).
    pub output_dir: String,
    /// At most this many tests (default 10).
    pub count: Option<usize>,
    /// `rust`, `c` or `spec` (a replay spec in the export format). Default: the function's
    /// language from its DWARF.
    pub lang: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReplayArgs {
    /// Recorded function name (full, or its last part when unique).
    pub function: String,
    /// Path of the rebuilt executable or shared library to call.
    pub binary: String,
    /// Replay at most this many calls, the oldest first (default 100).
    pub limit: Option<usize>,
    /// Return-value paths whose differences do not count: `$.created_at`, `$.items[*].id`,
    /// `$..trace_id`.
    #[serde(default)]
    pub ignore: Vec<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskArgs {
    /// A question in plain English, e.g. "What inputs cause errors in process_order?",
    /// "How has process_order changed this week?".
    pub question: String,
}

fn ok(value: Json) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn fail(message: impl std::fmt::Display) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.to_string())])
}

fn since(text: Option<&str>) -> Result<Option<SystemTime>, String> {
    match text {
        None => Ok(None),
        Some(t) => analysis::parse_since(t, SystemTime::now()).map(Some).ok_or_else(|| {
            format!("since `{t}` is not understood: write 30m, 24h, 7d, 2w, or a date like 2026-11-01")
        }),
    }
}

impl ChronicleMcp {
    /// A server over `storage`; `replayer` enables `run_replay`.
    pub fn new(storage: Box<dyn Storage>, replayer: Option<Arc<Replayer>>) -> Self {
        ChronicleMcp {
            storage: Arc::new(Mutex::new(storage)),
            replayer,
            tool_router: Self::tool_router(),
        }
    }

    /// Serves MCP on stdin/stdout until the client disconnects.
    pub fn serve_stdio(self) -> Result<(), McpError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(McpError::Runtime)?;
        runtime.block_on(async move {
            let service = self
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| McpError::Session(e.to_string()))?;
            service
                .waiting()
                .await
                .map_err(|e| McpError::Session(e.to_string()))?;
            Ok(())
        })
    }

    /// Runs `f` with the store and the recorded name `function` stands for.
    fn with_function(
        &self,
        function: &str,
        f: impl FnOnce(&dyn Storage, String) -> Result<Json, String>,
    ) -> CallToolResult {
        let storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        let known = match storage.function_names() {
            Ok(known) => known,
            Err(e) => return fail(e),
        };
        let function = match match_function(function, &known) {
            Ok(f) => f,
            Err(NoSuchFunction::NotFound { query, closest }) => {
                let hint = match closest.as_slice() {
                    [] => String::new(),
                    names => format!(" (closest: {})", names.join(", ")),
                };
                return fail(format!(
                    "no function named `{query}` has been recorded{hint}; call list_functions \
                     for the recorded names"
                ));
            }
            Err(NoSuchFunction::Ambiguous { query, matches }) => {
                return fail(format!(
                    "`{query}` matches several recorded functions ({}); pass the full name",
                    matches.join(", ")
                ));
            }
        };
        match f(storage.as_ref(), function) {
            Ok(json) => ok(json),
            Err(message) => fail(message),
        }
    }
}

#[tool_router]
impl ChronicleMcp {
    #[tool(
        description = "List every function Chronicle recorded, with calls stored, errors, \
                       unwound calls, p50/p99 latency, first/last seen, and the build IDs and \
                       binaries seen. Start here to learn the exact function names the other \
                       tools take."
    )]
    fn list_functions(&self) -> CallToolResult {
        let storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        match analysis::functions(storage.as_ref()) {
            Ok(json) => ok(json["functions"].clone()),
            Err(e) => fail(e),
        }
    }

    #[tool(
        description = "The signature of a recorded function from the DWARF debug info of the \
                       binary it was recorded from: parameter names and types, return type, \
                       language, and how each value is captured (or why not). Use it before \
                       writing code that calls or replaces the function."
    )]
    fn function_signature(&self, Parameters(args): Parameters<FunctionArg>) -> CallToolResult {
        self.with_function(&args.function, |storage, function| {
            let newest = storage
                .records(&crate::storage::RecordQuery {
                    function: Some(function.clone()),
                    order: crate::storage::RecordOrder::Newest,
                    limit: Some(1),
                    ..Default::default()
                })
                .map_err(|e| e.to_string())?;
            let record = newest.first().ok_or("no calls recorded")?;
            let path = PathBuf::from(&record.binary);
            let elf = chronicle_symbols::ElfFile::open(&path).map_err(|e| {
                format!(
                    "{e}; the binary {} is needed to read the signature",
                    path.display()
                )
            })?;
            let reports = chronicle_symbols::inspect::inspect(
                &elf,
                Some(&function),
                &chronicle_symbols::PlanLimits::default(),
            );
            let short = function.rsplit("::").next().unwrap_or(&function).to_owned();
            let report = reports
                .iter()
                .find(|r| r.name == function)
                .or_else(|| reports.iter().find(|r| r.name.ends_with(&short)))
                .ok_or_else(|| format!("{function} is not in {} any more", path.display()))?;
            let mut json = serde_json::to_value(report).map_err(|e| e.to_string())?;
            json["binary"] = record.binary.clone().into();
            json["build_id"] = record.build_id.clone().into();
            Ok(json)
        })
    }

    #[tool(
        description = "Recorded calls of a function, newest first, in Chronicle's export \
                       format (args, return, status ok|error|unwound, duration_ns, \
                       timestamp, build_id, unavailable). Filter by failures, time \
                       (`since`) and argument values (`where`: [\"order.customer=alice\"])."
    )]
    fn query_calls(&self, Parameters(args): Parameters<QueryArgs>) -> CallToolResult {
        self.with_function(&args.function, |storage, function| {
            let conditions = args
                .conditions
                .iter()
                .map(|c| analysis::parse_condition(c).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let filter = CallFilter {
                scope: Scope {
                    since: since(args.since.as_deref())?,
                    ..Scope::function(function)
                },
                errors: args.errors,
                slowest: None,
                conditions,
                limit: args.limit.unwrap_or(20),
            };
            let calls = analysis::query_calls(storage, &filter).map_err(|e| e.to_string())?;
            Ok(crate::export::export_json(&calls))
        })
    }

    #[tool(
        description = "The slowest recorded calls of a function with their inputs, plus \
                       p50/p90/p99/max latency and which input features correlate with \
                       latency. Use it to find performance problems and the inputs that \
                       trigger them."
    )]
    fn slowest_calls(&self, Parameters(args): Parameters<SlowestArgs>) -> CallToolResult {
        self.with_function(&args.function, |storage, function| {
            let scope = Scope {
                since: since(args.since.as_deref())?,
                ..Scope::function(function)
            };
            analysis::performance(storage, &scope, args.n.unwrap_or(10)).map_err(|e| e.to_string())
        })
    }

    #[tool(
        description = "What goes wrong in a function: failed calls (Rust Err variants, C \
                       negative return codes, calls that never returned) grouped by what \
                       they returned, with counts, shares of all failures, the error rate and \
                       an example input for each group."
    )]
    fn error_analysis(&self, Parameters(args): Parameters<ErrorArgs>) -> CallToolResult {
        self.with_function(&args.function, |storage, function| {
            let scope = Scope {
                since: since(args.since.as_deref())?,
                ..Scope::function(function)
            };
            analysis::error_analysis(storage, &scope).map_err(|e| e.to_string())
        })
    }

    #[tool(
        description = "How a function's behaviour changed between two builds or two periods: \
                       call volume, error rate and latency on each side, how the share of \
                       each output moved, input shapes never seen before, and inputs that \
                       gave one output before and another after (regressions). Give \
                       before_build and after_build, or `since` (compared with the same \
                       length of time just before)."
    )]
    fn drift(&self, Parameters(args): Parameters<DriftArgs>) -> CallToolResult {
        self.with_function(&args.function, |storage, function| {
            let (before, after) = match (&args.before_build, &args.after_build) {
                (Some(a), Some(b)) => {
                    let builds = storage.build_ids(&function).map_err(|e| e.to_string())?;
                    let full = |prefix: &str| {
                        builds
                            .iter()
                            .find(|b| b.starts_with(prefix))
                            .cloned()
                            .ok_or_else(|| {
                                format!(
                                    "no build {prefix} recorded for {function}; seen: {}",
                                    builds.join(", ")
                                )
                            })
                    };
                    let side = |id: String| Period {
                        label: format!("build {id}"),
                        scope: Scope {
                            build_id: Some(id),
                            ..Scope::function(function.clone())
                        },
                    };
                    (side(full(a)?), side(full(b)?))
                }
                (None, None) => {
                    let now = SystemTime::now();
                    let from = since(Some(args.since.as_deref().unwrap_or("7d")))?.unwrap_or(now);
                    let length = now.duration_since(from).unwrap_or_default();
                    let period = |label: &str, since, until| Period {
                        label: label.to_owned(),
                        scope: Scope {
                            since: Some(since),
                            until: Some(until),
                            ..Scope::function(function.clone())
                        },
                    };
                    (
                        period("previous period", from - length, from),
                        period("since", from, now),
                    )
                }
                _ => return Err("give both before_build and after_build, or neither".into()),
            };
            analysis::drift(storage, &before, &after).map_err(|e| e.to_string())
        })
    }

    #[tool(
        description = "Distinct recent example calls of a function (inputs, output, status), \
                       errors included. Use them as realistic test data or to understand \
                       what the function is called with."
    )]
    fn export_examples(&self, Parameters(args): Parameters<ExamplesArgs>) -> CallToolResult {
        self.with_function(&args.function, |storage, function| {
            analysis::examples(storage, &Scope::function(function), args.count.unwrap_or(5))
                .map_err(|e| e.to_string())
        })
    }

    #[tool(
        description = "Write regression tests from recorded calls into output_dir: Rust \
                       #[test]s, a C test program, or a replay spec (lang rust|c|spec; \
                       default from the function's language). Returns the file written, the \
                       call IDs used and the commands that build and run the tests."
    )]
    fn generate_tests(&self, Parameters(args): Parameters<GenerateArgs>) -> CallToolResult {
        self.with_function(&args.function, |storage, function| {
            let language = match &args.lang {
                Some(l) => Some(l.parse::<TestLanguage>().map_err(|e| e.to_string())?),
                None => None,
            };
            let options = GenerateOptions {
                count: args.count.unwrap_or(GenerateOptions::default().count),
                language,
                ..GenerateOptions::default()
            };
            let dir = PathBuf::from(&args.output_dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let file = BehaviorAgent::new(storage)
                .generate_test_file(&function, &dir, &options)
                .map_err(|e| e.to_string())?;
            Ok(json!({
                "path": file.path,
                "language": format!("{:?}", file.language).to_lowercase(),
                "function": file.function,
                "call_ids": file.call_ids,
                "skipped": file.skipped.iter().map(|(id, why)| json!({"call_id": id, "reason": why})).collect::<Vec<_>>(),
                "build": file.build,
                "run": file.run,
            }))
        })
    }

    #[tool(
        description = "Replay recorded calls of a function against a rebuilt binary (a real \
                       process under ptrace; Linux) and compare each result with the \
                       recording. Returns passed/failed/errors/skipped, average speedup and, \
                       per call, the differences with paths (`$.total: 19.98 → 19.97`). Use \
                       it to check that a refactor or rewrite behaves as production did."
    )]
    fn run_replay(&self, Parameters(args): Parameters<ReplayArgs>) -> CallToolResult {
        let Some(replayer) = self.replayer.clone() else {
            return fail("replaying against a native binary needs Linux and ptrace");
        };
        self.with_function(&args.function, |storage, function| {
            let mut ignore = IgnoreRules::default();
            for path in &args.ignore {
                ignore = ignore.path(path).map_err(|e| e.to_string())?;
            }
            let mut target = replayer(std::path::Path::new(&args.binary))?;
            let report = ReplayEngine::new(storage)
                .ignore(ignore)
                .replay(&function, target.as_mut(), Some(args.limit.unwrap_or(100)))
                .map_err(|e| e.to_string())?;
            Ok(report.to_json())
        })
    }

    #[tool(
        description = "Ask a question about recorded behaviour in plain English (errors, \
                       performance, drift, frequency, input distribution, examples, \
                       functions); the answer is JSON whose `type` names the analysis, or \
                       `help` listing questions it understands."
    )]
    fn ask(&self, Parameters(args): Parameters<AskArgs>) -> CallToolResult {
        let storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        match crate::ask::answer(storage.as_ref(), &args.question, SystemTime::now()) {
            Ok(json) => ok(json),
            Err(e) => fail(e),
        }
    }
}

#[tool_handler]
impl ServerHandler for ChronicleMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("chronicle", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Chronicle records what functions of running programs receive and return. Call \
             list_functions first, then query_calls, error_analysis, slowest_calls, drift or \
             export_examples to learn how a function behaves in production; generate_tests \
             and run_replay check a rewrite against that behaviour.",
            )
    }
}
