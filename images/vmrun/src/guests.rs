//! The guests of one `mnic-vm run`: one, or two with `--peer-cmd`.
//!
//! With two, each guest has `--devices` NICs of its own (guest 1 the first N device servers,
//! guest 2 the next N, so with `--fabric` their node ids are 1..N and N+1..2N, all peers of
//! each other), its own job, and its console prefixed in the run's output. The two are
//! joined by a serial link, their second serial port (`/dev/ttyS1` in the guest): a QEMU
//! `socket` chardev in the run directory, listening in guest 1's QEMU (started first) and
//! connected to from guest 2's. It is the guests' out-of-band channel, e.g. to hand each
//! other a `RemoteRegion` line. Like any serial line it loses what arrives before the
//! receiving guest has the port open (opening it clears the UART's FIFO): the jobs repeat
//! until answered (`mnic ... --link` shakes hands).

use std::ops::Range;
use std::path::Path;

/// The name of the serial link's socket in the run directory.
pub const LINK_SOCKET: &str = "link.sock";

/// Which end of the serial link a guest's QEMU holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// Listens on the socket (guest 1; its QEMU is started first).
    Server,
    /// Connects to it (guest 2).
    Client,
}

/// What one guest of a run is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPlan {
    /// Its console prefix (two guests only) and its name in messages.
    pub label: Option<String>,
    /// The job (`/etc/mnic/job`).
    pub cmd: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The run's device servers that are its NICs.
    pub devices: Range<u32>,
    /// Its end of the serial link (two guests only).
    pub link: Option<LinkEnd>,
}

impl GuestPlan {
    /// "the guest", or "guest2": for messages.
    pub fn name(&self) -> &str {
        self.label.as_deref().unwrap_or("the guest")
    }

    /// One console line as the run prints it.
    pub fn console_line(&self, line: &str) -> String {
        match &self.label {
            Some(l) => format!("[{l}] {line}"),
            None => line.to_string(),
        }
    }
}

/// The second guest of a run, as `--peer-*` asks.
pub struct Peer<'a> {
    pub cmd: &'a str,
    pub memory_mib: u32,
    pub cpus: u32,
}

/// The guests of a run: guest 1 runs `cmd`; `peer`, if any, is guest 2. Each has
/// `devices_each` NICs.
pub fn plan(
    cmd: &str,
    memory_mib: u32,
    cpus: u32,
    devices_each: u32,
    peer: Option<Peer>,
) -> Vec<GuestPlan> {
    let two = peer.is_some();
    let mut guests = vec![GuestPlan {
        label: two.then(|| "guest1".to_string()),
        cmd: cmd.to_string(),
        memory_mib,
        cpus,
        devices: 0..devices_each,
        link: two.then_some(LinkEnd::Server),
    }];
    if let Some(p) = peer {
        guests.push(GuestPlan {
            label: Some("guest2".to_string()),
            cmd: p.cmd.to_string(),
            memory_mib: p.memory_mib,
            cpus: p.cpus,
            devices: devices_each..2 * devices_each,
            link: Some(LinkEnd::Client),
        });
    }
    guests
}

/// The QEMU options of a guest's serial ports when it has a link: the console stays the
/// first port (on stdio, as `-nographic` gives it otherwise: an explicit second `-serial`
/// turns that default off), the link is the second (ttyS1, I/O port 0x2f8 on q35).
pub fn link_args(end: LinkEnd, socket: &Path) -> Vec<String> {
    let listen = match end {
        LinkEnd::Server => ",server=on,wait=off",
        LinkEnd::Client => "",
    };
    vec![
        "-serial".into(),
        "mon:stdio".into(),
        "-chardev".into(),
        format!("socket,id=link,path={}{listen}", socket.display()),
        "-serial".into(),
        "chardev:link".into(),
    ]
}

/// The run's exit status from its guests' job statuses: the worst (highest) of them, so it
/// is 0 only when every job succeeded, and a timeout (124) or a missing result (125)
/// outranks a job's own failure status.
pub fn worst(codes: &[i32]) -> i32 {
    codes.iter().copied().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_guest_has_no_label_and_no_link() {
        let g = plan("job", 1024, 2, 2, None);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].label, None);
        assert_eq!(g[0].link, None);
        assert_eq!(g[0].devices, 0..2);
        assert_eq!(g[0].console_line("MNIC-EXIT=0"), "MNIC-EXIT=0");
        assert_eq!(g[0].name(), "the guest");
    }

    #[test]
    fn two_guests_split_the_devices_and_the_link() {
        let peer = Peer {
            cmd: "other",
            memory_mib: 384,
            cpus: 1,
        };
        let g = plan("job", 1024, 2, 2, Some(peer));
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].devices.clone(), g[1].devices.clone()), (0..2, 2..4));
        assert_eq!(g[0].link, Some(LinkEnd::Server));
        assert_eq!(g[1].link, Some(LinkEnd::Client));
        assert_eq!(
            (g[1].cmd.as_str(), g[1].memory_mib, g[1].cpus),
            ("other", 384, 1)
        );
        assert_eq!((g[0].memory_mib, g[0].cpus), (1024, 2));
        assert_eq!(g[1].console_line("hello"), "[guest2] hello");
        assert_eq!(g[0].name(), "guest1");
    }

    #[test]
    fn only_the_server_listens() {
        let s = link_args(LinkEnd::Server, Path::new("/tmp/r/link.sock"));
        assert_eq!(
            s,
            [
                "-serial",
                "mon:stdio",
                "-chardev",
                "socket,id=link,path=/tmp/r/link.sock,server=on,wait=off",
                "-serial",
                "chardev:link"
            ]
        );
        let c = link_args(LinkEnd::Client, Path::new("/tmp/r/link.sock"));
        assert_eq!(c[3], "socket,id=link,path=/tmp/r/link.sock");
    }

    #[test]
    fn the_worst_status_wins() {
        assert_eq!(worst(&[0, 0]), 0);
        assert_eq!(worst(&[0, 3]), 3);
        assert_eq!(worst(&[1, 0]), 1);
        assert_eq!(worst(&[1, 124]), 124);
        assert_eq!(worst(&[0]), 0);
    }
}
