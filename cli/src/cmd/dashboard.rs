//! `chronicle dashboard`: the web dashboard over a database (read-only; `attach --dashboard`
//! serves the live one).

use std::net::SocketAddr;

use anyhow::Context;
use chronicle::dashboard::{self, Dashboard};

use super::{StoreArgs, open_store};
use crate::Failure;

/// Serve the web dashboard over a database: counts, latency, errors, alerts and recent calls.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  chronicle dashboard --db chronicle.db\n  chronicle dashboard --listen 0.0.0.0:8787 --token \"$TOKEN\"   # reachable from other hosts\n\nTo change sampling and limits while tracing, use `chronicle attach --dashboard ADDR`."
)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on. One that is not loopback requires a token (made and printed
    /// unless --token gives one).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Token every request must carry (`?token=` or `Authorization: Bearer`).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    let storage = open_store(&args.store)?;
    let mut board = Dashboard::store(storage, args.store.location());
    if let Some(token) = args.token {
        board = board.with_token(token);
    }
    let server = dashboard::serve(args.listen, board)
        .context("starting the dashboard (choose another address with --listen)")?;
    eprintln!(
        "chronicle: dashboard of {} at {} (Ctrl-C to stop)",
        args.store.location(),
        server.url()
    );
    // Serves until the process is stopped.
    loop {
        std::thread::park();
    }
}
