//! Runs a probe plan in user space, the way the eBPF program runs it in the kernel: against
//! registers and a readable memory (a stopped process under ptrace when replaying, or bytes
//! set up by a test). The results decode with the same [`FunctionPlan`] decoder, so a value
//! read here and a value captured by a probe are the same value.

use crate::plan::{FetchKind, FetchResult, FunctionPlan, ProbePlan, Source};
use crate::{DecodedArgs, DecodedReturn};

/// Memory a plan reads from.
pub trait Memory {
    /// Fills `buf` from `address` as far as memory is readable; returns how many bytes
    /// were read (all of `buf`, or fewer where unreadable memory starts).
    fn read(&self, address: u64, buf: &mut [u8]) -> usize;
}

/// What the probe would send: the payload and each fetch's length or negative status
/// (the `fetch_len` of an event).
#[derive(Clone, Debug)]
pub struct Fetched {
    payload: Vec<u8>,
    lens: Vec<i16>,
}

/// Status of a fetch whose parent failed (see `chronicle_common::fetch_status`).
const SKIPPED: i16 = -1000;
/// Status of a fetch whose base pointer was NULL.
const NULL: i16 = -1001;
/// `-EFAULT`: the bytes could not be read.
const EFAULT: i16 = -14;

impl Fetched {
    /// Each fetch's outcome, in order, as the decoder takes them.
    pub fn results<'a>(&'a self, plan: &ProbePlan) -> Vec<FetchResult<'a>> {
        plan.fetches
            .iter()
            .zip(&self.lens)
            .map(|(f, &n)| match n {
                SKIPPED => FetchResult::Skipped,
                NULL => FetchResult::Null,
                n if n < 0 => FetchResult::Failed(i32::from(n)),
                n => {
                    let at = f.dst as usize;
                    FetchResult::Bytes(&self.payload[at..at + n as usize])
                }
            })
            .collect()
    }

    /// The 8-byte word a source names, after the fetches ran.
    fn word(&self, plan: &ProbePlan, regs: &[u64; 16], source: Source) -> u64 {
        match source {
            Source::Reg(r) => regs.get(usize::from(r)).copied().unwrap_or(0),
            Source::Fetched { fetch, offset } => {
                let at = (u64::from(plan.fetches[fetch].dst) + offset) as usize;
                self.payload
                    .get(at..at + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
        }
    }
}

/// Runs `plan`'s fetches against `regs` and `memory`; `saved` are the words the entry probe
/// kept for a return probe (`FetchKind::Saved`).
pub fn run(plan: &ProbePlan, regs: &[u64; 16], memory: &dyn Memory, saved: &[u64]) -> Fetched {
    let mut out = Fetched {
        payload: vec![0; plan.payload_len as usize + 8],
        lens: Vec::with_capacity(plan.fetches.len()),
    };
    for fetch in &plan.fetches {
        if fetch.parent().is_some_and(|p| out.lens[p] < 0) {
            out.lens.push(SKIPPED);
            continue;
        }
        let base = out.word(plan, regs, fetch.base);
        if matches!(fetch.base, Source::Fetched { .. }) && base == 0 {
            out.lens.push(NULL);
            continue;
        }
        let address = base.wrapping_add(fetch.offset as u64);
        let cap = u64::from(fetch.len);
        let len = match fetch.count {
            None => cap,
            Some((source, scale)) => {
                (out.word(plan, regs, source).min(cap) * u64::from(scale)).min(cap)
            }
        } as usize;
        let dst = fetch.dst as usize;
        let buf = &mut out.payload[dst..dst + len];
        let n = match fetch.kind {
            FetchKind::Memory => {
                if memory.read(address, buf) == len {
                    len as i16
                } else {
                    EFAULT
                }
            }
            FetchKind::CString => read_c_string(memory, address, buf),
            FetchKind::Saved { slot } => match saved.get(usize::from(slot)) {
                Some(word) => {
                    out.payload[dst..dst + 8].copy_from_slice(&word.to_le_bytes());
                    8
                }
                None => SKIPPED,
            },
        };
        out.lens.push(n);
    }
    out
}

/// Reads a NUL-terminated string into `buf` like `bpf_probe_read_user_str`: the bytes up to
/// and including the NUL, or all of `buf` when there is none within it.
fn read_c_string(memory: &dyn Memory, address: u64, buf: &mut [u8]) -> i16 {
    let read = memory.read(address, buf);
    match buf[..read].iter().position(|&b| b == 0) {
        Some(nul) => (nul + 1) as i16,
        None if read == buf.len() => read as i16,
        // Unreadable memory before the terminator: the kernel helper fails too.
        None => EFAULT,
    }
}

impl FunctionPlan {
    /// Reads and decodes the arguments as the entry probe would, from `regs` at the entry
    /// site and `memory`.
    pub fn read_entry(&self, regs: &[u64; 16], memory: &dyn Memory) -> DecodedArgs {
        let fetched = run(&self.entry, regs, memory, &[]);
        self.decode_entry(regs, &fetched.results(&self.entry))
    }

    /// The words the entry probe saves for the return probe of the same call.
    pub fn entry_saves(&self, regs: &[u64; 16], memory: &dyn Memory) -> Vec<u64> {
        let fetched = run(&self.entry, regs, memory, &[]);
        self.entry
            .saves
            .iter()
            .map(|&s| fetched.word(&self.entry, regs, s))
            .collect()
    }

    /// Reads and decodes the return value as the return probe would, from `regs` just
    /// after the function returned, `memory`, and the words the entry probe saved.
    pub fn read_return(
        &self,
        regs: &[u64; 16],
        memory: &dyn Memory,
        saved: &[u64],
    ) -> DecodedReturn {
        let fetched = run(&self.ret, regs, memory, saved);
        self.decode_return(regs, &fetched.results(&self.ret))
    }
}
