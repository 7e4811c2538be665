//! Pairs entry and return events into calls, per thread and frame.
//!
//! A call is identified by its thread and the stack pointer at entry (it points at the
//! return address). A uretprobe fires after `ret` popped that address, so the matching
//! return has `sp == entry_sp + 8`. Frames can also end without a return event (exception,
//! longjmp, thread exit): an open call whose frame is provably gone is reported unwound.

use std::collections::HashMap;

/// An entry still waiting for its return.
#[derive(Debug)]
pub struct OpenCall<T> {
    /// Index of the traced function.
    pub function: usize,
    /// Stack pointer at entry.
    pub sp: u64,
    /// Entry time (`bpf_ktime_get_ns`).
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Whatever the caller decoded at entry.
    pub data: T,
}

/// What a return event closed.
#[derive(Debug)]
pub struct Closed<T> {
    /// The call this return belongs to, if its entry was seen.
    pub call: Option<OpenCall<T>>,
    /// Deeper calls on the same thread that can no longer return.
    pub unwound: Vec<OpenCall<T>>,
}

/// Open calls of every thread.
#[derive(Debug)]
pub struct Pairing<T> {
    threads: HashMap<u32, Vec<OpenCall<T>>>,
}

impl<T> Default for Pairing<T> {
    fn default() -> Self {
        Pairing {
            threads: HashMap::new(),
        }
    }
}

impl<T> Pairing<T> {
    /// Records an entry. Open calls at the same or a deeper stack position on this thread
    /// cannot still be running (their frames were reused), so they are returned as unwound.
    pub fn enter(&mut self, call: OpenCall<T>) -> Vec<OpenCall<T>> {
        let stack = self.threads.entry(call.tid).or_default();
        // Stacks grow down: an open frame with sp <= the new sp is gone.
        let split = stack
            .iter()
            .position(|open| open.sp <= call.sp)
            .unwrap_or(stack.len());
        let unwound = stack.split_off(split);
        stack.push(call);
        unwound
    }

    /// Records a return of `function` on `tid` with stack pointer `sp` (after `ret`).
    pub fn ret(&mut self, tid: u32, function: usize, sp: u64) -> Closed<T> {
        let Some(stack) = self.threads.get_mut(&tid) else {
            return Closed {
                call: None,
                unwound: Vec::new(),
            };
        };
        let entry_sp = sp.wrapping_sub(8);
        let found = stack
            .iter()
            .rposition(|open| open.sp == entry_sp && open.function == function);
        let closed = match found {
            Some(index) => {
                let mut unwound = stack.split_off(index);
                let call = unwound.remove(0);
                Closed {
                    call: Some(call),
                    unwound,
                }
            }
            None => {
                // Entry not seen (tracing started mid-call, or its event was lost). Frames
                // deeper than this one are gone all the same.
                let split = stack
                    .iter()
                    .position(|open| open.sp < entry_sp)
                    .unwrap_or(stack.len());
                Closed {
                    call: None,
                    unwound: stack.split_off(split),
                }
            }
        };
        if stack.is_empty() {
            self.threads.remove(&tid);
        }
        closed
    }

    /// The innermost open call on `tid` whose frame lies above stack pointer `sp`: the call
    /// that code running at `sp` belongs to.
    pub fn innermost_mut(&mut self, tid: u32, sp: u64) -> Option<&mut OpenCall<T>> {
        self.threads
            .get_mut(&tid)?
            .iter_mut()
            .rev()
            .find(|open| open.sp > sp)
    }

    /// The thread exited: none of its open calls will return.
    pub fn thread_exit(&mut self, tid: u32) -> Vec<OpenCall<T>> {
        self.threads.remove(&tid).unwrap_or_default()
    }

    /// Every open call, for when tracing stops.
    pub fn drain(&mut self) -> Vec<OpenCall<T>> {
        let mut all: Vec<_> = self.threads.drain().flat_map(|(_, stack)| stack).collect();
        all.sort_by_key(|c| c.ktime_ns);
        all
    }

    /// The newest open call of `tid` and how many are open on it (itself included).
    pub fn newest_mut(&mut self, tid: u32) -> Option<(&mut OpenCall<T>, usize)> {
        let stack = self.threads.get_mut(&tid)?;
        let depth = stack.len();
        stack.last_mut().map(|call| (call, depth))
    }

    /// Number of calls still open.
    pub fn open_calls(&self) -> usize {
        self.threads.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(function: usize, tid: u32, sp: u64, t: u64) -> OpenCall<&'static str> {
        OpenCall {
            function,
            sp,
            ktime_ns: t,
            pid: 1,
            tid,
            data: "",
        }
    }

    #[test]
    fn recursion_pairs_innermost_first() {
        let mut p = Pairing::default();
        for (depth, sp) in [0x1000u64, 0xf00, 0xe00].into_iter().enumerate() {
            assert!(p.enter(open(0, 7, sp, depth as u64)).is_empty());
        }
        let inner = p.ret(7, 0, 0xe08);
        assert_eq!(inner.call.unwrap().ktime_ns, 2);
        assert!(inner.unwound.is_empty());
        assert_eq!(p.ret(7, 0, 0xf08).call.unwrap().ktime_ns, 1);
        assert_eq!(p.ret(7, 0, 0x1008).call.unwrap().ktime_ns, 0);
        assert_eq!(p.open_calls(), 0);
    }

    #[test]
    fn threads_do_not_mix() {
        let mut p = Pairing::default();
        p.enter(open(0, 1, 0x1000, 10));
        p.enter(open(0, 2, 0x1000, 20));
        assert_eq!(p.ret(2, 0, 0x1008).call.unwrap().ktime_ns, 20);
        assert_eq!(p.ret(1, 0, 0x1008).call.unwrap().ktime_ns, 10);
    }

    #[test]
    fn longjmp_past_open_calls_unwinds_them() {
        let mut p = Pairing::default();
        p.enter(open(0, 1, 0x1000, 1)); // outer
        p.enter(open(1, 1, 0x0f00, 2)); // inner, never returns
        let closed = p.ret(1, 0, 0x1008);
        assert_eq!(closed.call.unwrap().ktime_ns, 1);
        assert_eq!(
            closed
                .unwound
                .iter()
                .map(|c| c.ktime_ns)
                .collect::<Vec<_>>(),
            [2]
        );
    }

    #[test]
    fn reused_frame_unwinds_the_old_call() {
        let mut p = Pairing::default();
        p.enter(open(0, 1, 0x1000, 1)); // unwound by an exception, no return event
        let unwound = p.enter(open(0, 1, 0x1000, 2));
        assert_eq!(unwound.iter().map(|c| c.ktime_ns).collect::<Vec<_>>(), [1]);
        assert_eq!(p.ret(1, 0, 0x1008).call.unwrap().ktime_ns, 2);
    }

    #[test]
    fn return_without_entry_is_an_orphan() {
        let mut p: Pairing<&str> = Pairing::default();
        p.enter(open(0, 1, 0x0e00, 1));
        let closed = p.ret(1, 0, 0x1008);
        assert!(closed.call.is_none());
        assert_eq!(
            closed.unwound.len(),
            1,
            "a deeper frame cannot outlive its caller's return"
        );
    }

    #[test]
    fn code_deeper_than_a_frame_belongs_to_the_innermost_call_above_it() {
        let mut p = Pairing::default();
        p.enter(open(0, 1, 0x1000, 1));
        p.enter(open(1, 1, 0x0f00, 2));
        assert_eq!(p.innermost_mut(1, 0x0e00).unwrap().ktime_ns, 2);
        assert_eq!(p.innermost_mut(1, 0x0f80).unwrap().ktime_ns, 1);
        assert!(p.innermost_mut(1, 0x1000).is_none(), "not inside any call");
        assert!(p.innermost_mut(2, 0x0100).is_none(), "another thread");
    }

    #[test]
    fn thread_exit_and_drain_return_everything_open() {
        let mut p = Pairing::default();
        p.enter(open(0, 1, 0x1000, 1));
        p.enter(open(0, 2, 0x1000, 2));
        assert_eq!(p.thread_exit(1).len(), 1);
        assert_eq!(p.drain().len(), 1);
        assert_eq!(p.open_calls(), 0);
    }
}
