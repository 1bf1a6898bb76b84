//! What an error means for retries and the exit code: the one rule every
//! module's errors answer to (see the parent module for the exit codes).
//!
//! A leaf module: every layer classifies its own errors with [`Kind`]
//! without depending on the layers above it.

/// What the person should do about an error, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Change an input (flags, config, catalog, state, credentials, host).
    Input,
    /// Nothing to change, and the same call may pass if tried again soon
    /// (a dropped connection, an unavailable server): retried within the
    /// run, and once the retries run out it is a [`Kind::Failed`].
    Transient,
    /// Nothing to change: the run failed and a rerun may succeed.
    Failed,
    /// Stopped by a signal; the code is 128 + the signal number.
    Interrupted(u8),
}

impl Kind {
    /// Whether trying the same call again within this run may succeed.
    pub fn is_retryable(self) -> bool {
        self == Kind::Transient
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Input => 2,
            Kind::Transient | Kind::Failed => 1,
            Kind::Interrupted(code) => code,
        }
    }
}

/// The text of an error's innermost source: the cause itself, said once.
///
/// Client libraries wrap an OS error in layers whose messages repeat the
/// inner text (mysql_async prints `Input/output error: Input/output error:
/// Connection refused`; tonic prints `transport error` and hides the rest
/// in sources). The innermost source is the part a person can act on.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !t.trim().is_empty() {
            text = t;
        }
        cur = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Input/output error: {0}")]
    struct Layer(#[source] std::io::Error);

    #[test]
    fn root_cause_says_the_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = Layer(io);
        assert_eq!(root_cause(&e), "Connection refused");
        let plain = std::io::Error::other("disk full");
        assert_eq!(root_cause(&plain), "disk full");
    }

    #[test]
    fn kinds_map_to_the_documented_codes() {
        let cases = [
            (Kind::Input, 2, false),
            (Kind::Transient, 1, true),
            (Kind::Failed, 1, false),
            (Kind::Interrupted(143), 143, false),
        ];
        for (kind, code, retry) in cases {
            assert_eq!(
                (kind.exit_code(), kind.is_retryable()),
                (code, retry),
                "{kind:?}"
            );
        }
    }
}
