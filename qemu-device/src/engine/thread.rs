//! The data thread: the one thread that runs [`Core`], separate from the vfio-user socket
//! loop. It carries out CONTROL writes and resets it is handed, polls while there is
//! work (and, with shadow pages, for a spin budget after it: `pace`), and sleeps until a
//! doorbell, a request, a throttled item's instant or the shadow pages' backstop.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pace::{Next, Pace};
use super::state::Core;
use crate::fabric::Transport;
use crate::mem::GuestRam;
use crate::shared::{Request, Shared};

/// The data thread.
pub struct Engine {
    sh: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the data thread over `sh`, accessing guest memory through `ram`, polling
    /// shadow pages for `spin` after the last work (zero: never), serving the fabric of
    /// `fabric` if the device is a node of one.
    pub fn spawn(
        sh: Arc<Shared>,
        ram: Arc<GuestRam>,
        spin: Duration,
        fabric: Option<Transport>,
    ) -> std::io::Result<Self> {
        let mut core = Core::new(sh);
        if let Some(t) = fabric {
            core.attach_fabric(t);
        }
        Self::with_core(core, ram, spin)
    }

    /// Starts the data thread around `core` (tests and benches prepare one by function
    /// calls first).
    pub fn with_core(mut core: Core, ram: Arc<GuestRam>, spin: Duration) -> std::io::Result<Self> {
        /// Tells everyone waiting for the data thread that it died, if it unwinds.
        struct Watch(Arc<Shared>);
        impl Drop for Watch {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.data_thread_died();
                }
            }
        }
        let sh = core.shared().clone();
        let thread = std::thread::Builder::new()
            .name("mnic-data".into())
            .spawn(move || {
                let sh = core.shared().clone();
                let _watch = Watch(sh.clone());
                let mut pace = Pace::new(spin);
                // A request was carried out since the last round: that wakes too.
                let mut requested = false;
                loop {
                    #[cfg(test)]
                    if sh
                        .panic_next
                        .swap(false, std::sync::atomic::Ordering::SeqCst)
                    {
                        panic!("injected data thread panic");
                    }
                    if let Some(r) = sh.take_request() {
                        let m = ram.snapshot();
                        core.handle(r, &m);
                        drop(m);
                        sh.ack();
                        requested = true;
                        continue;
                    }
                    if sh.shutting_down() {
                        break;
                    }
                    // A snapshot per round only: DMA_UNMAP waits for it. The round (with
                    // the shadow-page accesses around it) is bracketed for bus mastering:
                    // clearing it waits for the round to end.
                    let m = ram.snapshot();
                    sh.dma_begin();
                    let kicked = sh.take_kick() || std::mem::take(&mut requested);
                    pace.before_round(&mut core, &m, Instant::now(), kicked);
                    let act = core.poll(&m);
                    let next = pace.after_round(&mut core, &m, act, Instant::now());
                    sh.dma_end();
                    drop(m);
                    match next {
                        Next::Poll => std::hint::spin_loop(),
                        Next::Sleep(until) => sh.wait_for_work(until),
                    }
                }
            })?;
        Ok(Engine {
            sh,
            thread: Some(thread),
        })
    }

    /// Hands a CONTROL write or reset to the data thread and waits for it.
    pub fn request(&self, r: Request) {
        self.sh.request(r);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.sh.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
