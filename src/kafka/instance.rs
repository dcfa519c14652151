//! Static group membership (KIP-345): every detector consumes with a `group.instance.id`
//! of its own, so a restarted detector takes its place in the group again at once, with
//! no rebalance (and, on brokers that keep a dead member until its rebalance ends, such
//! as noida-db, without waiting for ever).
//!
//! The id comes from `kafka.instance_id`, a template: `{hostname}` is this host's name
//! and `{n}` the lowest number that no other detector of the group on this host holds.
//! Holding means an exclusive lock on a file in the temporary directory, released when
//! the process ends however it ends, so a detector killed with `kill -9` and started
//! again gets its number back. An id without `{n}` that another detector on this host
//! holds is refused at start.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// The default template.
pub const DEFAULT_TEMPLATE: &str = "{hostname}-{n}";

/// Most detectors of one group on one host (`{n}` runs from 0 below it).
const MAX_PER_HOST: u32 = 256;

/// This process's claim on an instance id: the id, and the lock that holds it.
#[derive(Debug)]
pub struct InstanceId {
    /// The `group.instance.id`.
    pub id: String,
    _lock: File,
}

/// Why no id could be claimed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another detector of the group on this host holds it.
    #[error(
        "{id} is used by another detector of group {group} on this host (lock {path}): give each detector its own id, such as \"{{hostname}}-{{n}}\""
    )]
    InUse {
        /// The id.
        id: String,
        /// The group.
        group: String,
        /// The lock file.
        path: String,
    },
    /// Every number up to the limit is held.
    #[error("{MAX_PER_HOST} detectors of group {group} already run on this host")]
    Full {
        /// The group.
        group: String,
    },
    /// The lock file could not be opened.
    #[error("{path}: {cause}")]
    Io {
        /// The lock file.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
}

/// This host's name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`, then `localhost`).
#[must_use]
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Claim an id for `group` from `template` (see the module documentation), with lock
/// files in `dir`.
pub fn claim(
    template: &str,
    group: &str,
    dir: &std::path::Path,
) -> Result<InstanceId, InstanceError> {
    let with_host = template.replace("{hostname}", &hostname());
    let numbered = with_host.contains("{n}");
    let candidates: Box<dyn Iterator<Item = String>> = if numbered {
        Box::new((0..MAX_PER_HOST).map(|n| with_host.replace("{n}", &n.to_string())))
    } else {
        Box::new(std::iter::once(with_host))
    };
    for id in candidates {
        let path = lock_path(dir, group, &id);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|cause| InstanceError::Io {
                path: path.display().to_string(),
                cause,
            })?;
        match file.try_lock() {
            Ok(()) => return Ok(InstanceId { id, _lock: file }),
            Err(std::fs::TryLockError::WouldBlock) if numbered => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(InstanceError::InUse {
                    id,
                    group: group.to_owned(),
                    path: path.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(cause)) => {
                return Err(InstanceError::Io {
                    path: path.display().to_string(),
                    cause,
                });
            }
        }
    }
    Err(InstanceError::Full {
        group: group.to_owned(),
    })
}

/// The lock file of `id` in `group`: names made safe for a file name.
fn lock_path(dir: &std::path::Path, group: &str, id: &str) -> PathBuf {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(format!("fraudstream-{}-{}.lock", safe(group), safe(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_ids_are_distinct_on_one_host_and_come_back_after_the_holder_ends() {
        let dir = tempfile::tempdir().unwrap();
        let host = hostname();
        let a = claim(DEFAULT_TEMPLATE, "g", dir.path()).unwrap();
        let b = claim(DEFAULT_TEMPLATE, "g", dir.path()).unwrap();
        assert_eq!(a.id, format!("{host}-0"));
        assert_eq!(b.id, format!("{host}-1"));
        let other_group = claim(DEFAULT_TEMPLATE, "h", dir.path()).unwrap();
        assert_eq!(other_group.id, format!("{host}-0"));
        drop(a);
        let again = claim(DEFAULT_TEMPLATE, "g", dir.path()).unwrap();
        assert_eq!(again.id, format!("{host}-0"), "the lowest free number");
    }

    #[test]
    fn a_fixed_id_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = claim("detector-1", "g", dir.path()).unwrap();
        let e = claim("detector-1", "g", dir.path()).unwrap_err();
        assert!(matches!(e, InstanceError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("detector-1"), "{e}");
    }
}
