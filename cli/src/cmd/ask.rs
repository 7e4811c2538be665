//! `chronicle ask`: a question in plain English, answered with one JSON object.

use std::io::Write;

use anyhow::Context;
use chronicle::testgen::BehaviorAgent;

use super::{StoreArgs, open_store};
use crate::Failure;

/// Ask about recorded behaviour: errors, performance, drift, frequency, inputs, examples.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    chronicle ask \"What inputs cause errors in process_order?\"\n  \
    chronicle ask \"Show me the 10 slowest calls to validate_user\"\n  \
    chronicle ask \"How has process_order behavior changed this week?\"\n  \
    chronicle ask \"Did make_quote change between builds 5d41402a and 7f3c9e01?\"\n\n\
    The answer is one JSON object whose `type` names the analysis; a question that is not \
    understood gets `help` with examples.")]
pub struct Args {
    /// The question.
    #[arg(value_name = "QUESTION")]
    pub question: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    let storage = open_store(&args.store)?;
    let answer = BehaviorAgent::new(storage.as_ref())
        .query(&args.question)
        .with_context(|| format!("reading {}", args.store.location()))?;
    let text = serde_json::to_string_pretty(&answer).context("rendering json")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(crate::exit::OK)
}
