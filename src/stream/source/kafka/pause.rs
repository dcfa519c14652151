//! Telling a zombie from a broker's quirk. A consumer whose static identity
//! (`group.instance.id`) another consumer took gets `FencedInstanceId`; so does one that
//! simply rejoins after its session expired while the broker was frozen (noida-db does
//! this). The first must stop, or it would take its place back from its replacement and
//! the two would fight; the second must go on. A process that was itself paused (SIGSTOP,
//! a suspended VM) for seconds just before, or that is fenced again and again (another
//! live process with its identity), is the zombie.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the watch thread wakes.
const TICK: Duration = Duration::from_millis(250);
/// A wake-up this late means the process was not running.
const PAUSED: Duration = Duration::from_secs(2);
/// A pause this recent makes a fenced consumer a zombie.
const RECENT: Duration = Duration::from_secs(300);
/// Fenced this often within [`BURST`]: another live process has the identity.
const BURSTS: usize = 3;
const BURST: Duration = Duration::from_secs(60);

/// When the process started, and when (ms after that) its last long pause ended.
struct Watch {
    start: Instant,
    paused_at_ms: AtomicU64,
}

/// The watch thread, started on first use.
fn watch() -> &'static Watch {
    static WATCH: OnceLock<&'static Watch> = OnceLock::new();
    WATCH.get_or_init(|| {
        let w: &'static Watch = Box::leak(Box::new(Watch {
            start: Instant::now(),
            paused_at_ms: AtomicU64::new(0),
        }));
        let spawned = std::thread::Builder::new()
            .name("pause-watch".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    if now.duration_since(last) >= PAUSED {
                        let at = now.duration_since(w.start).as_millis() as u64;
                        w.paused_at_ms.store(at.max(1), Ordering::Relaxed);
                    }
                    last = now;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "pause watch not started: a paused detector is told apart by repeated fencing only");
        }
        w
    })
}

/// Start watching for pauses (call when consuming starts).
pub fn start() {
    watch();
}

/// Whether the process was paused within [`RECENT`].
fn paused_recently() -> bool {
    let w = watch();
    let at = w.paused_at_ms.load(Ordering::Relaxed);
    at > 0 && w.start.elapsed().saturating_sub(Duration::from_millis(at)) <= RECENT
}

/// The times this process's consumer was fenced.
#[derive(Debug, Default)]
pub struct Fenced {
    times: Vec<Instant>,
}

impl Fenced {
    /// Record a fencing; whether this process is a zombie.
    pub fn is_zombie(&mut self) -> bool {
        let now = Instant::now();
        self.times.retain(|t| now.duration_since(*t) <= BURST);
        self.times.push(now);
        paused_recently() || self.times.len() >= BURSTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_again_and_again_is_a_zombie() {
        let mut f = Fenced::default();
        start();
        assert!(!f.is_zombie(), "once, not paused: a broker's quirk");
        assert!(!f.is_zombie());
        assert!(f.is_zombie(), "three times within a minute");
    }
}
