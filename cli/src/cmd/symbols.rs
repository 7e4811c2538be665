//! `chronicle symbols`: the functions of a binary Chronicle can probe, their decoded
//! signatures, and what will be captured of each parameter and return value (and why not).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chronicle_symbols::inspect::{FunctionReport, ValueReport, inspect};
use chronicle_symbols::{ElfFile, PlanLimits};

use crate::Failure;

/// List the probe-able functions of a binary with their signatures and what is captured.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  chronicle symbols ./orders --filter process_order\n  \
                        chronicle symbols ./orders --json"
)]
pub struct Args {
    /// The executable or shared library.
    #[arg(value_name = "BINARY")]
    pub binary: PathBuf,
    /// Only functions whose (demangled) name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Longest string read per value, in bytes.
    #[arg(long, default_value_t = 256, value_name = "BYTES")]
    pub max_string: u16,
}

pub fn run(args: Args) -> Result<u8, Failure> {
    // The error says what went wrong, the cause included; no chain to print after it.
    let elf = ElfFile::open(&args.binary).map_err(|e| anyhow::anyhow!("{e}"))?;
    let limits = PlanLimits {
        max_string: args.max_string,
        ..PlanLimits::default()
    };
    let reports = inspect(&elf, args.filter.as_deref(), &limits);
    let mut out = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string_pretty(&reports).context("rendering json")?;
        writeln!(out, "{text}").context("writing to stdout")?;
        return Ok(0);
    }
    if reports.is_empty() {
        let what = match &args.filter {
            Some(f) => format!("no function of {} matches {f:?}", args.binary.display()),
            None => format!("{} has no function symbols", args.binary.display()),
        };
        return Err(anyhow::anyhow!(what).into());
    }
    for r in &reports {
        write_report(&mut out, r).context("writing to stdout")?;
    }
    Ok(0)
}

fn write_report(out: &mut impl Write, r: &FunctionReport) -> std::io::Result<()> {
    let site = if r.entry_offset > 0 {
        format!(
            "  [entry probe at +{:#x}, after the prologue]",
            r.entry_offset
        )
    } else {
        String::new()
    };
    writeln!(out, "{}  ({:#x}){site}", r.name, r.address)?;
    match &r.signature {
        Some(sig) => writeln!(out, "  {sig}")?,
        None => {
            if let Some(note) = &r.note {
                writeln!(out, "  {note}")?;
            }
        }
    }
    if r.inlined {
        writeln!(
            out,
            "  note: also inlined elsewhere; inlined copies are not probed"
        )?;
    }
    for v in r.params.iter().chain(&r.ret) {
        write_value(out, v)?;
    }
    writeln!(out)
}

fn write_value(out: &mut impl Write, v: &ValueReport) -> std::io::Result<()> {
    match (&v.from, &v.unavailable) {
        (Some(from), _) => writeln!(out, "    {:<12} {:<28} from {from}", v.name, v.ty),
        (None, Some(why)) => writeln!(out, "    {:<12} {:<28} NOT CAPTURED: {why}", v.name, v.ty),
        (None, None) => writeln!(out, "    {:<12} {}", v.name, v.ty),
    }
}
