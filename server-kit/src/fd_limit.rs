//! The process's limit on open files (`RLIMIT_NOFILE`).
//!
//! Every connection a server holds is a file descriptor. Many systems start processes with a
//! soft limit of 1024 while allowing far more (the hard limit), so a server that wants ten
//! thousand clients must first lift its soft limit to the hard one: [`raise_to_hard_limit`] does
//! that, and [`raise_for_server`] does it at a server's start-up and logs the outcome.
//!
//! Unix only (through rustix); elsewhere the calls fail with [`io::ErrorKind::Unsupported`] and
//! the limit stays as the system set it.

use std::io;

use tracing::{debug, warn};

/// A process's soft and hard limits on open files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The limit in force: opening one more file past it fails with `EMFILE`.
    pub soft: u64,
    /// The ceiling an unprivileged process may raise its soft limit to.
    pub hard: u64,
}

/// The current limits on open files.
pub fn current() -> io::Result<OpenFileLimit> {
    sys::get()
}

/// Raises the soft limit on open files to the hard limit (a no-op when they are equal) and
/// returns the limits now in force.
pub fn raise_to_hard_limit() -> io::Result<OpenFileLimit> {
    let limit = sys::get()?;
    if limit.soft >= limit.hard {
        return Ok(limit);
    }
    sys::set(OpenFileLimit {
        soft: limit.hard,
        hard: limit.hard,
    })?;
    sys::get()
}

/// What a server calls at start-up: [`raise_to_hard_limit`], logged (a failure is a warning,
/// not fatal: the server then serves as many connections as the old limit allows).
pub fn raise_for_server() -> Option<OpenFileLimit> {
    match raise_to_hard_limit() {
        Ok(limit) => {
            debug!(soft = limit.soft, hard = limit.hard, "open-file limit");
            Some(limit)
        }
        Err(err) => {
            warn!(error = %err, "could not raise the open-file limit");
            None
        }
    }
}

#[cfg(unix)]
mod sys {
    //! `getrlimit`/`setrlimit` through rustix's safe wrappers.

    use std::io;

    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    use super::OpenFileLimit;

    /// rustix's `None` is `RLIM_INFINITY`.
    fn value(limit: Option<u64>) -> u64 {
        limit.unwrap_or(u64::MAX)
    }

    fn limit(value: u64) -> Option<u64> {
        (value != u64::MAX).then_some(value)
    }

    pub(super) fn get() -> io::Result<OpenFileLimit> {
        let limits = getrlimit(Resource::Nofile);
        Ok(OpenFileLimit {
            soft: value(limits.current),
            hard: value(limits.maximum),
        })
    }

    pub(super) fn set(new: OpenFileLimit) -> io::Result<()> {
        let limits = Rlimit {
            current: limit(new.soft),
            maximum: limit(new.hard),
        };
        setrlimit(Resource::Nofile, limits).map_err(io::Error::from)
    }
}

#[cfg(not(unix))]
mod sys {
    //! Platforms where the open-file limit is left as the system set it.

    use std::io;

    use super::OpenFileLimit;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "reading or raising the open-file limit is only supported on Unix",
        )
    }

    pub(super) fn get() -> io::Result<OpenFileLimit> {
        Err(unsupported())
    }

    pub(super) fn set(_limit: OpenFileLimit) -> io::Result<()> {
        Err(unsupported())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The soft limit as the kernel reports it for this process.
    fn soft_limit_in_proc() -> u64 {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .unwrap();
        let soft = line.split_whitespace().nth(3).unwrap();
        soft.parse().unwrap_or(u64::MAX) // "unlimited"
    }

    /// One test, not two: lowering the limit must not race with a test that reads it.
    #[test]
    fn the_limit_is_the_kernels_and_raising_lifts_it_to_the_hard_one() {
        let before = current().unwrap();
        assert!(before.soft <= before.hard);
        assert_eq!(before.soft, soft_limit_in_proc());
        if before.soft > 16 {
            // Lower it first, so that raising has something to do.
            sys::set(OpenFileLimit {
                soft: before.soft - 1,
                hard: before.hard,
            })
            .unwrap();
            assert_eq!(soft_limit_in_proc(), before.soft - 1);
        }
        let raised = raise_to_hard_limit().unwrap();
        assert_eq!(
            raised,
            OpenFileLimit {
                soft: before.hard,
                hard: before.hard,
            }
        );
        assert_eq!(soft_limit_in_proc(), before.hard);
    }
}
