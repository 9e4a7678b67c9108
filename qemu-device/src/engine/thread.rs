//! The data thread: the one thread that runs [`Core`], separate from the vfio-user socket
//! loop. It carries out CONTROL writes and resets it is handed, polls while there is
//! work, and sleeps until a doorbell, a request or a throttled item's instant.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::poll::Activity;
use super::state::Core;
use crate::mem::GuestRam;
use crate::shared::{Request, Shared};

/// The data thread.
pub struct Engine {
    sh: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the data thread over `sh`, accessing guest memory through `ram`.
    pub fn spawn(sh: Arc<Shared>, ram: Arc<GuestRam>) -> std::io::Result<Self> {
        /// Tells everyone waiting for the data thread that it died, if it unwinds.
        struct Watch(Arc<Shared>);
        impl Drop for Watch {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.data_thread_died();
                }
            }
        }
        let mut core = Core::new(sh.clone());
        let thread = std::thread::Builder::new()
            .name("mnic-data".into())
            .spawn(move || {
                let sh = core.shared().clone();
                let _watch = Watch(sh.clone());
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
                        continue;
                    }
                    if sh.shutting_down() {
                        break;
                    }
                    // A snapshot per round only: DMA_UNMAP waits for it. The round is
                    // bracketed for bus mastering: clearing it waits for the round to end.
                    let m = ram.snapshot();
                    sh.dma_begin();
                    let act = core.poll(&m);
                    sh.dma_end();
                    drop(m);
                    if let Activity::Idle(until) = act {
                        sh.wait_for_work(until);
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
