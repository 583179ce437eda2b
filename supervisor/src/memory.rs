//! Handing memory the daemon freed back to the system after large requests.
//!
//! Parsing a large JSON body builds a tree many times the body's size (a 3.4 MB body of
//! 100,000 messages took about 73 MB), and glibc's allocator keeps what is freed in the
//! arena of the thread that freed it: each such request left the daemon's RSS that much
//! higher, arena by arena (measured: 18 MB → 155 MB after two rounds of odd requests).
//! `malloc_trim` returns the free pages of every arena to the system, and fewer arenas
//! ([`ARENAS`]) leave less of it scattered where a trim cannot take it back.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A body at least this large has its memory handed back once the daemon is done with
/// it. Ordinary requests (a few KB) never cause a trim.
pub const LARGE_BODY: usize = 64 * 1024;

/// The trim comes once no large body has come for this long: by then their requests'
/// answers have been written and freed too, and a burst costs one trim.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// Large bodies that never pause are trimmed after at most this long.
const AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// Large bodies came since the last trim.
static WANTED: Notify = Notify::const_new();
static TRIMMER: OnceLock<()> = OnceLock::new();

/// Asks for the allocator's free pages to go back to the system once large bodies
/// stop coming for [`QUIET_FOR`]. Call from within the runtime.
pub fn give_back_soon() {
    TRIMMER.get_or_init(|| {
        tokio::spawn(trimmer());
    });
    // A permit is kept when the trimmer is not waiting: no call is missed.
    WANTED.notify_one();
}

/// The one task that trims: after each wanted trim, waits for a quiet second (bounded
/// by [`AT_MOST_EVERY`]), then trims.
async fn trimmer() {
    loop {
        WANTED.notified().await;
        let latest = Instant::now() + AT_MOST_EVERY;
        while let Ok(()) =
            tokio::time::timeout_at((Instant::now() + QUIET_FOR).min(latest), WANTED.notified())
                .await
        {}
        give_back();
    }
}

/// glibc's arenas: by default up to 8 per core, one per thread that allocates at
/// once, each keeping what it freed in its own pieces. Measured with the burst of
/// `tests/hostile.rs` (`memory_comes_back_after_a_burst_of_odd_requests`), RSS once
/// trimmed against before it: +7.7 MB with the default, +6.2 MB with two arenas, +0.9
/// MB with one. The daemon's threads mostly wait on sockets, and glibc's per-thread
/// cache serves most small allocations without the arena's lock.
const ARENAS: i32 = 1;

/// Caps the allocator's arenas at [`ARENAS`]; call before any thread is started.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Returns the allocator's free pages to the system now (glibc; elsewhere nothing to
/// do). It walks every arena: about a millisecond.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it touches no
    // memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
