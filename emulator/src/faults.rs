//! Faults on demand, for testing the tap's reliability paths.
//!
//! A [`FaultHandle`] holds at most one armed stream fault plus an optional
//! "purged before" mark per shard. Each Sync stream (except `current` peeks,
//! unless [`Fault::include_peeks`] is set) picks up the armed fault when it
//! starts; a one-shot fault is disarmed by that pickup, a persistent one hits
//! every stream until cleared. The fault fires after the stream has sent
//! `after` responses (0 = before the first one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// End the stream with this gRPC status code and message.
    Status { code: i32, message: String },
    /// Stop sending and keep the stream open until the client gives up
    /// (longer than any deadline).
    Stall,
    /// Abort the TCP connection under the stream (RST).
    DropConnection,
    /// Send one response whose row `lengths` do not match its `values`, then
    /// carry on.
    MalformedRow,
}

/// An armed fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Responses sent before the fault fires.
    pub after: u32,
    /// Keep firing on every stream (true) or only on the next one (false).
    pub persistent: bool,
    /// Also apply to `current` position peeks.
    pub include_peeks: bool,
}

impl Fault {
    pub fn new(kind: FaultKind, after: u32) -> Self {
        Fault {
            kind,
            after,
            persistent: false,
            include_peeks: false,
        }
    }

    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    pub fn include_peeks(mut self) -> Self {
        self.include_peeks = true;
        self
    }
}

#[derive(Debug, Default)]
struct FaultState {
    armed: Option<Fault>,
    /// Positions whose GTID number is below the mark are reported purged.
    /// Key: shard name; `None` key = every shard.
    purged_before: HashMap<Option<String>, u64>,
}

/// Shared control handle; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct FaultHandle {
    state: Arc<Mutex<FaultState>>,
    /// Faults that went off so far (not reset by `clear`): what a test
    /// waits on to know a stream is stalled or a connection was dropped.
    fired: Arc<std::sync::atomic::AtomicU64>,
}

/// Text MySQL (before 8.0.26) puts in the error when a replica asks for
/// binlogs that are gone; the tap matches on it.
pub const PURGED_MESSAGE: &str =
    "Cannot replicate because the master purged required binary logs. \
Replicate the missing transactions from elsewhere, or provision a new slave from backup.";

impl FaultHandle {
    /// Arms a fault (replacing any armed one).
    pub fn set(&self, fault: Fault) {
        if let Ok(mut s) = self.state.lock() {
            s.armed = Some(fault);
        }
    }

    /// Disarms the stream fault and clears purge marks.
    pub fn clear(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = FaultState::default();
        }
    }

    /// Reports positions whose GTID number is below `gtid` as purged, for one
    /// shard or (with `None`) every shard.
    pub fn set_purged_before(&self, shard: Option<&str>, gtid: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.purged_before.insert(shard.map(str::to_string), gtid);
        }
    }

    /// The fault a new stream must apply (disarming a one-shot fault).
    pub fn take_for_stream(&self, is_peek: bool) -> Option<Fault> {
        let mut s = self.state.lock().ok()?;
        let fault = s.armed.as_ref()?;
        if is_peek && !fault.include_peeks {
            return None;
        }
        if fault.persistent {
            Some(fault.clone())
        } else {
            s.armed.take()
        }
    }

    /// Counts a fault that went off on a stream.
    pub fn note_fired(&self) {
        self.fired.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// How many faults went off so far, on any stream.
    pub fn fired(&self) -> u64 {
        self.fired.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a start position ending at GTID `n` counts as purged.
    pub fn is_purged(&self, shard: &str, n: u64) -> bool {
        let Ok(s) = self.state.lock() else {
            return false;
        };
        let mark = s
            .purged_before
            .get(&Some(shard.to_string()))
            .or_else(|| s.purged_before.get(&None));
        matches!(mark, Some(m) if n < *m)
    }
}

/// Parses a CLI fault spec: `status:CODE:MESSAGE@N`, `stall@N`, `drop@N`,
/// `malformed@N`, each optionally followed by `!` for persistent.
pub fn parse_fault(spec: &str) -> Result<Fault, String> {
    let (spec, persistent) = match spec.strip_suffix('!') {
        Some(s) => (s, true),
        None => (spec, false),
    };
    let (kind, after) = match spec.rsplit_once('@') {
        Some((k, n)) => (
            k,
            n.parse::<u32>()
                .map_err(|e| format!("bad response count in {spec:?}: {e}"))?,
        ),
        None => (spec, 0),
    };
    let kind = if let Some(rest) = kind.strip_prefix("status:") {
        let (code, message) = rest.split_once(':').unwrap_or((rest, "injected fault"));
        let code = code
            .parse::<i32>()
            .map_err(|e| format!("bad status code in {spec:?}: {e}"))?;
        FaultKind::Status {
            code,
            message: message.to_string(),
        }
    } else {
        match kind {
            "stall" => FaultKind::Stall,
            "drop" => FaultKind::DropConnection,
            "malformed" => FaultKind::MalformedRow,
            other => return Err(format!("unknown fault {other:?}")),
        }
    };
    Ok(Fault {
        kind,
        after,
        persistent,
        include_peeks: false,
    })
}
