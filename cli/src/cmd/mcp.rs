//! `chronicle mcp`: an MCP server on stdio for coding agents (see `chronicle::mcp`).

use std::sync::Arc;

use chronicle::mcp::{ChronicleMcp, Replayer};

use super::{StoreArgs, open_store};
use crate::Failure;

/// Serve Chronicle's recordings to a coding agent over MCP (stdio).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Register it with an agent, e.g. in its MCP configuration:\n  \
    {\"mcpServers\": {\"chronicle\": {\"command\": \"chronicle\", \"args\": [\"mcp\", \"--db\", \
    \"/srv/chronicle.db\"]}}}\n\n\
    Tools: list_functions, function_signature, query_calls, slowest_calls, error_analysis, \
    drift, export_examples, generate_tests, run_replay, ask."
)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    let storage = open_store(&args.store)?;
    ChronicleMcp::new(storage, replayer()).serve_stdio()?;
    Ok(crate::exit::OK)
}

#[cfg(target_os = "linux")]
fn replayer() -> Option<Arc<Replayer>> {
    use chronicle_agent::replay::{NativeOptions, NativeTarget};
    let make =
        |binary: &std::path::Path| -> Result<Box<dyn chronicle::replay::ReplayTarget>, String> {
            NativeTarget::new(binary, NativeOptions::default())
                .map(|t| Box::new(t) as Box<dyn chronicle::replay::ReplayTarget>)
                .map_err(|e| e.to_string())
        };
    Some(Arc::new(make))
}

#[cfg(not(target_os = "linux"))]
fn replayer() -> Option<Arc<Replayer>> {
    None
}
