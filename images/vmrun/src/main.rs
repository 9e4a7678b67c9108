//! `mnic-vm`: builds guest initramfs images and runs the mnic guest under QEMU.
//!
//! `mnic-vm run` starts one `mnic-device` server per NIC, starts QEMU with guest RAM in a
//! shared memfd and a `vfio-user-pci` device per server, streams the serial console,
//! enforces a timeout, and exits with the status of the guest's job (reported by the
//! guest's init as `MNIC-EXIT=<n>`). Sockets, logs and the per-run archive live in a
//! per-run directory that is removed afterwards; every process it started is ended by PID
//! (each `mnic-device serve` is a supervisor that ends its engine process by PID in turn).
//! With `--fabric` the NICs form one fabric on loopback (`fabric.rs`). With `--peer-cmd` a
//! second guest runs next to the first, with NICs of its own in the same fabric and a serial
//! link between the two (`guests.rs`).

mod fabric;
mod guests;
mod initramfs;
mod processes;
mod qmp;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use guests::GuestPlan;
use initramfs::{Archive, Content, FileSpec};
use processes::Owned;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Exit status when the guest did not finish within `--timeout`.
const EXIT_TIMEOUT: i32 = 124;
/// Exit status when QEMU ended without the guest reporting a result.
const EXIT_NO_RESULT: i32 = 125;
/// The line the guest init prints when its job ends.
const RESULT_MARKER: &str = "MNIC-EXIT=";

#[derive(Parser)]
#[command(name = "mnic-vm", about = "Build and run mnic guest images under QEMU")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the base initramfs (busybox, init, modules, programs).
    Initramfs(InitramfsArgs),
    /// Boot the guest next to mnic-device servers and run a job or a shell.
    Run(Box<RunArgs>),
}

#[derive(Args)]
struct InitramfsArgs {
    /// Output archive (uncompressed newc cpio).
    #[arg(long)]
    out: PathBuf,
    /// Static busybox binary.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// The guest's /init script.
    #[arg(long)]
    init: PathBuf,
    /// Extra files, SRC:DEST[:MODE] (repeatable).
    #[arg(long = "file")]
    files: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Guest kernel (bzImage).
    #[arg(long)]
    kernel: PathBuf,
    /// Base initramfs from `mnic-vm initramfs`.
    #[arg(long)]
    initrd: PathBuf,
    /// The mnic-device binary.
    #[arg(long)]
    device_bin: Option<PathBuf>,
    /// Number of mnic NICs (one device server each); 0 boots without the device.
    #[arg(long, default_value_t = 1)]
    devices: u32,
    /// QEMU wrapper or binary.
    #[arg(long, default_value = "scripts/qemu")]
    qemu: PathBuf,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    memory_mib: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Shell command the guest runs as its job (with --interactive: before the shell).
    #[arg(long, default_value = "true")]
    cmd: String,
    /// Boot a second guest (same kernel and initramfs) that runs this shell command as its
    /// job. It gets `--devices` NICs of its own (with `--fabric`: nodes N+1..2N of the same
    /// fabric), and the two guests are joined by a serial link, `/dev/ttyS1` in each.
    /// Consoles are prefixed `[guest1]`/`[guest2]`; the run's status is the worse job's.
    #[arg(long, conflicts_with_all = ["interactive", "hot_add_device_after"])]
    peer_cmd: Option<String>,
    /// The second guest's memory in MiB.
    #[arg(long, default_value_t = 384, requires = "peer_cmd")]
    peer_memory_mib: u32,
    /// The second guest's CPUs.
    #[arg(long, default_value_t = 1, requires = "peer_cmd")]
    peer_cpus: u32,
    /// Give a shell on the console instead of running a job.
    #[arg(long)]
    interactive: bool,
    /// Seconds before the run is stopped (0 = none; default none when interactive).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Run the KUnit suites matching this glob at boot (otherwise KUnit is off).
    #[arg(long)]
    kunit: Option<String>,
    /// Extra kernel command-line arguments (`MNIC_VM_APPEND` in the environment adds more).
    #[arg(long, default_value = "")]
    append: String,
    /// Start the device servers in strict mode (a stale access halts the device).
    #[arg(long)]
    strict: bool,
    /// How long each device's data thread polls shadow doorbells after its last work, in
    /// microseconds (`mnic-device serve --spin-us`; 0 = never poll). Default: the
    /// device's own.
    #[arg(long)]
    device_spin_us: Option<u64>,
    /// Kill device 0's engine process (SIGKILL) this many seconds after boot (fault
    /// injection: the device falls off the bus, its supervisor keeps QEMU's socket open).
    #[arg(long)]
    kill_device_after: Option<u64>,
    /// Start one more device server this many seconds after boot and hot-add it to the
    /// running guest (QMP `device_add` into a PCIe root port kept free for it): the
    /// replacement of a device that died.
    #[arg(long)]
    hot_add_device_after: Option<u64>,
    /// Put the NICs behind QEMU's emulated IOMMU (intel-iommu, caching-mode=on) and boot
    /// the guest with `intel_iommu=on iommu.strict=1`: device DMA addresses are then bus
    /// addresses (IOVAs) that QEMU maps for the device one DMA_MAP at a time, and an unmap
    /// in the guest reaches the device before the guest's unmap returns.
    #[arg(long)]
    iommu: bool,
    /// Make the NICs of `--devices` one fabric on loopback (docs/fabric.md 14.1): device i
    /// is node i+1, bound to 127.0.0.1 on a free port the runner picks, with every other
    /// device as a peer. A device hot-added by `--hot-add-device-after` is no node.
    #[arg(long)]
    fabric: bool,
    /// With `--fabric`: the transport's fault injection (docs/fabric.md 14.11) on every
    /// device, as `drop=P,dup=P,reorder=P,seed=N` (any of them), e.g.
    /// `drop=0.05,dup=0.05,reorder=0.1,seed=1`.
    #[arg(long, requires = "fabric")]
    fabric_inject: Option<String>,
    /// Print the device counters (host side) when the job ends.
    #[arg(long)]
    stats: bool,
    /// Also write the console to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Do not echo the console to stdout.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Initramfs(a) => build_initramfs(&a).map(|()| 0),
        Cmd::Run(a) => run(&a),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("mnic-vm: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn build_initramfs(a: &InitramfsArgs) -> Result<()> {
    let mut ar = Archive::new();
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/etc/mnic",
        "/root",
        "/lib/modules",
        "/usr/bin",
    ] {
        ar.dir(d);
    }
    ar.char_dev("/dev/console", 0o600, 5, 1);
    ar.file(FileSpec {
        content: Content::Host(a.busybox.clone()),
        dest: "/bin/busybox".into(),
        mode: 0o755,
    });
    ar.symlink("/bin/sh", "busybox");
    ar.file(FileSpec {
        content: Content::Host(a.init.clone()),
        dest: "/init".into(),
        mode: 0o755,
    });
    for f in &a.files {
        ar.file(FileSpec::parse(f)?);
    }
    ar.write_to(&a.out)
}

/// Per-run state that must be torn down: the run directory and the processes.
struct RunDir {
    dir: tempfile::TempDir,
}

impl RunDir {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mnic-run-")
            .tempdir()
            .context("creating the run directory")?;
        Ok(Self { dir })
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The file where device `i`'s supervisor writes its engine's PID.
fn engine_pid_file(rd: &RunDir, i: u32) -> PathBuf {
    rd.path(&format!("mnic{i}.engine.pid"))
}

/// How every device server of a run is started.
#[derive(Clone, Copy)]
struct DeviceOpts {
    /// `--strict`.
    strict: bool,
    /// `--spin-us`, if given.
    spin_us: Option<u64>,
}

/// Starts device server `i`; `fabric`: its `--fabric-*` options (none: no fabric).
fn start_device(
    bin: &Path,
    rd: &RunDir,
    i: u32,
    opts: DeviceOpts,
    fabric: &[String],
) -> Result<Owned> {
    let sock = rd.path(&format!("mnic{i}.sock"));
    let ctl = rd.path(&format!("mnic{i}.ctl"));
    let log = std::fs::File::create(rd.path(&format!("mnic{i}.log")))?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--socket")
        .arg(&sock)
        .arg("--control")
        .arg(&ctl)
        .arg("--engine-pid")
        .arg(engine_pid_file(rd, i));
    if opts.strict {
        cmd.arg("--strict");
    }
    if let Some(us) = opts.spin_us {
        cmd.arg("--spin-us").arg(us.to_string());
    }
    cmd.args(fabric);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut dev = Owned::spawn(&format!("mnic-device #{i}"), &mut cmd)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        if let Some(st) = dev.try_wait()? {
            let log = std::fs::read_to_string(rd.path(&format!("mnic{i}.log"))).unwrap_or_default();
            bail!("{} exited before listening ({st}):\n{log}", dev.name());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not create {} within 20 s",
                dev.name(),
                sock.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(dev)
}

fn kernel_cmdline(a: &RunArgs) -> String {
    let mut s = String::from("console=ttyS0 panic=-1 numa=fake=2");
    match &a.kunit {
        // KUnit prints its KTAP at KERN_INFO: let it through to the console.
        Some(glob) => s.push_str(&format!(" loglevel=7 kunit.filter_glob={glob}")),
        // Warnings and worse reach the console (the harness looks for them); info does not.
        None => s.push_str(" loglevel=5 kunit.enable=0"),
    }
    if let Some(after) = a.kill_device_after {
        // The kernel hands parameters it does not know (name=value) to init's environment:
        // a guest test learns when its device is to die from the one option that kills it.
        s.push_str(&format!(" MNIC_KILL_DEVICE_AFTER={after}"));
    }
    if a.iommu {
        // Strict: each unmap invalidates the IOTLB (and so reaches the device) before it
        // returns; the default lazy mode would batch invalidations behind a flush queue.
        s.push_str(" intel_iommu=on iommu.strict=1");
    }
    if !a.append.is_empty() {
        s.push(' ');
        s.push_str(&a.append);
    }
    // Set by `make soak-debug` (page_poison=1): arguments for every boot of a test run,
    // whose plan file cannot know the kernel flavor.
    if let Ok(extra) = std::env::var("MNIC_VM_APPEND") {
        if !extra.trim().is_empty() {
            s.push(' ');
            s.push_str(extra.trim());
        }
    }
    s
}

/// The per-run archive that the kernel unpacks over the base image: the job to run. Each
/// guest of the run has its own, `name` in the run directory.
fn job_archive(a: &RunArgs, guest: &GuestPlan, rd: &RunDir, name: &str) -> Result<PathBuf> {
    let mut ar = Archive::new();
    let job = format!("{}\n", guest.cmd);
    ar.file(FileSpec {
        content: Content::Bytes(job.into_bytes()),
        dest: "/etc/mnic/job".into(),
        mode: 0o644,
    });
    if a.interactive {
        ar.file(FileSpec {
            content: Content::Bytes(Vec::new()),
            dest: "/etc/mnic/interactive".into(),
            mode: 0o644,
        });
    }
    // The kernel wants each archive in an initrd to start on a 4-byte boundary; concatenate
    // the base image (itself padded by cpio's trailer alignment) and the job archive.
    let job_path = rd.path(&format!("{name}.job.cpio"));
    ar.write_to(&job_path)?;
    let mut all =
        std::fs::read(&a.initrd).with_context(|| format!("reading {}", a.initrd.display()))?;
    while all.len() % 4 != 0 {
        all.push(0);
    }
    all.extend(std::fs::read(&job_path)?);
    let out = rd.path(&format!("{name}.initrd.cpio"));
    std::fs::write(&out, all)?;
    Ok(out)
}

fn qemu_command(a: &RunArgs, guest: &GuestPlan, rd: &RunDir, initrd: &Path) -> Command {
    let mut q = Command::new(&a.qemu);
    let mem = guest.memory_mib;
    q.args([
        "-M",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ]);
    q.args(["-m", &format!("{mem}M"), "-smp", &guest.cpus.to_string()]);
    // Guest RAM must be a shared memfd: QEMU hands its fd to the device in DMA_MAP, and the
    // device then reads and writes guest memory directly.
    q.args([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
    ]);
    q.args(["-machine", "memory-backend=mem"]);
    q.arg("-kernel").arg(&a.kernel).arg("-initrd").arg(initrd);
    q.args(["-append", &kernel_cmdline(a)]);
    if a.iommu {
        // The IOMMU must be created before the devices it translates for. caching-mode=on
        // makes the guest report every new mapping (not only invalidations), which is what
        // lets QEMU send the device a DMA_MAP for each one.
        q.args(["-device", "intel-iommu,caching-mode=on"]);
    }
    if let Some(end) = guest.link {
        q.args(guests::link_args(end, &rd.path(guests::LINK_SOCKET)));
    }
    for i in guest.devices.clone() {
        let sock = rd.path(&format!("mnic{i}.sock"));
        q.args([
            "-device",
            &format!(r#"{{"driver":"vfio-user-pci","id":"mnic{i}","socket":{{"type":"unix","path":"{}"}}}}"#, sock.display()),
        ]);
    }
    if a.hot_add_device_after.is_some() {
        // An empty root port with hot-plug, and the monitor that plugs into it. Native PCIe
        // hot-plug (the guest's pciehp): QEMU's default on q35 is ACPI hot-plug, which would
        // keep the port from the guest's native driver.
        q.args([
            "-global",
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
            "-device",
            &format!("pcie-root-port,id={HOTPLUG_PORT},chassis=1,slot=1"),
        ]);
        q.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            rd.path("qmp.sock").display()
        ));
    }
    q
}

/// The PCIe root port a hot-added device goes into.
const HOTPLUG_PORT: &str = "hotplug0";

/// Starts device server `i` and hot-adds it to the running guest through QMP.
fn hot_add_device(bin: &Path, rd: &RunDir, i: u32, opts: DeviceOpts) -> Result<Owned> {
    let dev = start_device(bin, rd, i, opts, &[])?;
    let mut qmp = qmp::Qmp::connect(&rd.path("qmp.sock"))?;
    qmp.execute(&qmp::device_add_vfio_user(
        &format!("mnic{i}"),
        &rd.path(&format!("mnic{i}.sock")),
        HOTPLUG_PORT,
    ))?;
    Ok(dev)
}

fn device_stats(bin: &Path, rd: &RunDir, i: u32) -> String {
    let out = Command::new(bin)
        .arg("stats")
        .arg("--control")
        .arg(rd.path(&format!("mnic{i}.ctl")))
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => format!(
            "(stats failed: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("(stats failed: {e})"),
    }
}

/// Records, for each device not recorded yet, an exit seen while QEMU still runs. Once QEMU
/// has gone, every supervisor ends too (its client left), which is no failure: QEMU is
/// checked after the devices, so an exit that races QEMU's own is not recorded.
fn note_ended_devices(
    devices: &mut [Owned],
    ended: &mut [Option<std::process::ExitStatus>],
    qemu: &mut Owned,
) -> Result<()> {
    let now: Vec<_> = devices
        .iter_mut()
        .map(|d| d.try_wait().ok().flatten())
        .collect();
    if qemu.try_wait()?.is_some() {
        return Ok(());
    }
    for (slot, st) in ended.iter_mut().zip(now) {
        if slot.is_none() {
            *slot = st;
        }
    }
    Ok(())
}

/// How long the other guest may still run after one guest's job failed or its QEMU ended
/// without a result (it may be waiting on the link for a peer that will never answer).
const PEER_GRACE: Duration = Duration::from_secs(10);
/// How long a guest may take to power off after reporting its result.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);

/// One console line of guest `.0`, or the end (`None`) of one of its QEMU's output pipes.
type ConsoleEvent = (usize, Option<String>);

/// A guest while the run lasts.
struct GuestRun {
    plan: GuestPlan,
    qemu: Owned,
    /// QEMU's output pipes not at their end yet: 0 once QEMU is gone and all its output read.
    open_pipes: usize,
    result: Option<i32>,
    result_at: Option<Instant>,
    /// Finished (its QEMU stopped), with QEMU's status.
    done: Option<Option<std::process::ExitStatus>>,
    /// Stopped because the other guest failed: its missing result is not the run's status.
    stopped_for_peer: bool,
}

impl GuestRun {
    /// Whether the guest has finished: it reported its result and powered off (or had
    /// `POWER_OFF_GRACE` to), or its QEMU ended and all its output has been read.
    fn finished(&mut self) -> Result<bool> {
        Ok(match self.result_at {
            Some(t) => self.qemu.try_wait()?.is_some() || t.elapsed() > POWER_OFF_GRACE,
            None => self.open_pipes == 0,
        })
    }

    /// Stops its QEMU (if still running) and marks it finished.
    fn finish(&mut self) {
        if self.done.is_none() {
            self.done = Some(self.qemu.stop(Duration::from_secs(5)));
        }
    }

    /// Finished without a successful job.
    fn failed(&self) -> bool {
        self.done.is_some() && self.result != Some(0)
    }
}

/// Starts QEMU for `guest`, its output sent to `tx` as guest `g`'s.
fn start_qemu(
    a: &RunArgs,
    rd: &RunDir,
    g: usize,
    guest: GuestPlan,
    tx: &mpsc::Sender<ConsoleEvent>,
) -> Result<GuestRun> {
    let name = guest.label.clone().unwrap_or_else(|| "guest".into());
    let initrd = job_archive(a, &guest, rd, &name)?;
    let mut qcmd = qemu_command(a, &guest, rd, &initrd);
    let qemu_name = match &guest.label {
        Some(l) => format!("qemu ({l})"),
        None => "qemu".into(),
    };
    let mut qemu = Owned::spawn(
        &qemu_name,
        qcmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let mut open_pipes = 0;
    for pipe in [
        qemu.child_mut()
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        qemu.child_mut()
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        open_pipes += 1;
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(|l| l.ok()) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send((g, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((g, None));
        });
    }
    Ok(GuestRun {
        plan: guest,
        qemu,
        open_pipes,
        result: None,
        result_at: None,
        done: None,
        stopped_for_peer: false,
    })
}

/// Waits until guest 1's QEMU listens on the link socket, so that guest 2's QEMU can
/// connect to it (a client QEMU that cannot connect does not start).
fn wait_for_link(rd: &RunDir, server: &mut GuestRun) -> Result<()> {
    let sock = rd.path(guests::LINK_SOCKET);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        if let Some(st) = server.qemu.try_wait()? {
            bail!(
                "{} exited ({st}) before listening on the link",
                server.qemu.name()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not create {} within 20 s",
                server.qemu.name(),
                sock.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The guests `a` asks for: one, or two with `--peer-cmd`.
fn guest_plans(a: &RunArgs) -> Vec<GuestPlan> {
    guests::plan(
        &a.cmd,
        a.memory_mib,
        a.cpus,
        a.devices,
        a.peer_cmd.as_deref().map(|cmd| guests::Peer {
            cmd,
            memory_mib: a.peer_memory_mib,
            cpus: a.peer_cpus,
        }),
    )
}

fn run(a: &RunArgs) -> Result<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let rd = RunDir::new()?;
    let opts = DeviceOpts {
        strict: a.strict,
        spin_us: a.device_spin_us,
    };
    let plans = guest_plans(a);
    let all_devices = a.devices * plans.len() as u32;
    let device_bin = match (&a.device_bin, a.devices) {
        (_, 0) => None,
        (Some(b), _) => Some(b.clone()),
        (None, _) => bail!("--device-bin is required unless --devices 0"),
    };
    let mut fabric = match (a.fabric, &device_bin) {
        (false, _) => None,
        (true, None) => bail!("--fabric needs devices (--devices 1 or more)"),
        (true, Some(_)) => {
            let inject = fabric::inject_args(a.fabric_inject.as_deref().unwrap_or(""))?;
            Some(fabric::Fabric::new(all_devices, inject)?)
        }
    };
    if let Some(f) = &fabric {
        eprintln!("mnic-vm: fabric: {}", f.describe());
    }
    let mut devices = Vec::new();
    if let Some(bin) = &device_bin {
        for i in 0..all_devices {
            let fabric_args = fabric.as_mut().map_or_else(Vec::new, |f| f.device_args(i));
            devices.push(start_device(bin, &rd, i, opts, &fabric_args)?);
        }
    }
    if a.interactive {
        let guest = &plans[0];
        let initrd = job_archive(a, guest, &rd, "guest")?;
        let mut qcmd = qemu_command(a, guest, &rd, &initrd);
        let mut qemu = Owned::spawn(
            "qemu",
            qcmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()),
        )?;
        while qemu.try_wait()?.is_none() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(0);
    }
    let (tx, rx) = mpsc::channel::<ConsoleEvent>();
    let mut guests: Vec<GuestRun> = Vec::new();
    for (g, plan) in plans.into_iter().enumerate() {
        if plan.link == Some(guests::LinkEnd::Client) {
            if let Some(server) = guests.first_mut() {
                wait_for_link(&rd, server)?;
            }
        }
        guests.push(start_qemu(a, &rd, g, plan, &tx)?);
    }
    drop(tx);
    let mut log = match &a.log {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => None,
    };
    let started = Instant::now();
    let deadline = (a.timeout > 0).then(|| started + Duration::from_secs(a.timeout));
    let mut killed_device = false;
    let mut ended = Vec::new();
    let mut first_failure: Option<Instant> = None;
    let mut stdout = std::io::stdout();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((g, Some(line))) => {
                let guest = &mut guests[g];
                let shown = guest.plan.console_line(&line);
                if !a.quiet {
                    let _ = writeln!(stdout, "{shown}");
                }
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{shown}");
                }
                if let Some(rest) = line.trim().strip_prefix(RESULT_MARKER) {
                    guest.result = rest.trim().parse().ok().or(Some(EXIT_NO_RESULT));
                    guest.result_at = Some(Instant::now());
                    if let (true, Some(bin)) = (a.stats, &device_bin) {
                        for i in guest.plan.devices.clone() {
                            let stats = format!(
                                "[host] mnic-device #{i} counters:\n{}",
                                device_stats(bin, &rd, i)
                            );
                            for line in stats.split('\n') {
                                println!("{}", guest.plan.console_line(line));
                            }
                        }
                    }
                }
            }
            Ok((g, None)) => guests[g].open_pipes -= 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted; stopped QEMU and the device servers");
        }
        if let Some(d) = deadline {
            if Instant::now() > d {
                let pids: Vec<String> = guests.iter().map(|g| g.qemu.pid().to_string()).collect();
                eprintln!(
                    "mnic-vm: timeout after {} s; stopping QEMU (pid {})",
                    a.timeout,
                    pids.join(", ")
                );
                return Ok(EXIT_TIMEOUT);
            }
        }
        if let (Some(after), false) = (a.kill_device_after, killed_device) {
            if started.elapsed() >= Duration::from_secs(after) {
                if let Some(dev) = devices.first() {
                    match dev.kill_child(&engine_pid_file(&rd, 0)) {
                        Ok(pid) => eprintln!(
                            "mnic-vm: killed the engine (pid {pid}) of {} (pid {}) as asked",
                            dev.name(),
                            dev.pid()
                        ),
                        Err(e) => {
                            eprintln!("mnic-vm: cannot kill the engine of {}: {e:#}", dev.name())
                        }
                    }
                }
                killed_device = true;
            }
        }
        if let (Some(after), Some(bin)) = (a.hot_add_device_after, &device_bin) {
            let i = a.devices;
            if devices.len() == i as usize && started.elapsed() >= Duration::from_secs(after) {
                match hot_add_device(bin, &rd, i, opts) {
                    Ok(dev) => {
                        eprintln!("mnic-vm: hot-added mnic{i} (pid {}) as asked", dev.pid());
                        devices.push(dev);
                    }
                    Err(e) => bail!("hot-adding mnic{i}: {e:#}"),
                }
            }
        }
        ended.resize(devices.len(), None);
        for guest in guests.iter_mut() {
            // Guest 1's range grows with a hot-added device (one guest only).
            let range = guest.plan.devices.start as usize..match guest.plan.link {
                None => devices.len(),
                Some(_) => guest.plan.devices.end as usize,
            };
            note_ended_devices(
                &mut devices[range.clone()],
                &mut ended[range],
                &mut guest.qemu,
            )?;
            if guest.done.is_none() && guest.finished()? {
                guest.finish();
            }
        }
        if first_failure.is_none() && guests.iter().any(GuestRun::failed) {
            first_failure = Some(Instant::now());
        }
        if first_failure.is_some_and(|t| t.elapsed() > PEER_GRACE) {
            for guest in guests.iter_mut().filter(|g| g.done.is_none()) {
                eprintln!(
                    "mnic-vm: stopping {} (pid {}): the other guest failed",
                    guest.plan.name(),
                    guest.qemu.pid()
                );
                guest.stopped_for_peer = true;
                guest.finish();
            }
        }
        if guests.iter().all(|g| g.done.is_some()) {
            break;
        }
    }
    for guest in guests.iter_mut() {
        guest.finish();
    }
    // The device servers' logs live in the run directory, which goes with the run; a
    // developer chasing a device-side error asks to keep them.
    if let Some(dir) = std::env::var_os("MNIC_VM_KEEP_DEVICE_LOGS") {
        for i in 0..devices.len() {
            let name = format!("mnic{i}.log");
            let to = Path::new(&dir).join(&name);
            if let Err(e) = std::fs::copy(rd.path(&name), &to) {
                eprintln!("mnic-vm: keeping {name} in {}: {e}", to.display());
            }
        }
    }
    let any_missing = guests.iter().any(|g| g.result.is_none());
    for (i, dev) in devices.iter_mut().enumerate() {
        // Without a result, any device that ended may be why.
        let st = match ended.get(i).copied().flatten() {
            Some(st) => Some(st),
            None if any_missing => dev.try_wait().ok().flatten(),
            None => None,
        };
        if let Some(st) = st {
            if !killed_device || i != 0 {
                let log =
                    std::fs::read_to_string(rd.path(&format!("mnic{i}.log"))).unwrap_or_default();
                eprintln!(
                    "mnic-vm: {} ended during the run ({st}); its log:\n{log}",
                    dev.name()
                );
            }
        }
    }
    let codes: Vec<i32> = guests
        .iter()
        .filter(|g| g.result.is_some() || !g.stopped_for_peer)
        .map(|g| match g.result {
            Some(code) => code,
            None => {
                let whose = match &g.plan.label {
                    Some(l) => format!(" ({l})"),
                    None => String::new(),
                };
                eprintln!(
                    "mnic-vm: QEMU{whose} ended ({:?}) without a guest result ({RESULT_MARKER}<n>)",
                    g.done.flatten()
                );
                EXIT_NO_RESULT
            }
        })
        .collect();
    let worst = guests::worst(&codes);
    if worst != 0 {
        // A failed run's device warnings (a stale access, an oracle finding, a refused
        // request) go with it: the run directory, and so the logs, are gone afterwards.
        for i in 0..devices.len() {
            let log = std::fs::read_to_string(rd.path(&format!("mnic{i}.log"))).unwrap_or_default();
            print_log_tail(i, &log);
        }
    }
    Ok(worst)
}

/// Lines of a device log a failed run prints at most (its end: what led to the failure).
const LOG_TAIL: usize = 40;

/// Prints the end of device `i`'s log to stderr, if it has anything.
fn print_log_tail(i: usize, log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    if lines.is_empty() {
        return;
    }
    let from = lines.len().saturating_sub(LOG_TAIL);
    eprintln!(
        "mnic-vm: the run failed; mnic{i}'s log ({} lines, the last {}):",
        lines.len(),
        lines.len() - from
    );
    for l in &lines[from..] {
        eprintln!("  {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        let base = ["mnic-vm", "run", "--kernel", "bz", "--initrd", "i.cpio"];
        let cli = Cli::try_parse_from(base.iter().chain(extra))?;
        match cli.cmd {
            Cmd::Run(a) => Ok(*a),
            Cmd::Initramfs(_) => panic!("parsed as initramfs"),
        }
    }

    fn args_of(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn peer_options_need_a_peer_and_exclude_a_shell_and_hot_add() {
        assert!(run_args(&["--peer-cmd", "true"]).is_ok());
        assert!(run_args(&["--peer-memory-mib", "256"]).is_err());
        assert!(run_args(&["--peer-cpus", "2"]).is_err());
        assert!(run_args(&["--peer-cmd", "true", "--interactive"]).is_err());
        assert!(run_args(&["--peer-cmd", "true", "--hot-add-device-after", "5"]).is_err());
        assert!(run_args(&["--fabric-inject", "seed=1"]).is_err());
        let a = run_args(&["--peer-cmd", "echo hi", "--peer-memory-mib", "256"]).unwrap();
        assert_eq!((a.peer_memory_mib, a.peer_cpus), (256, 1));
    }

    #[test]
    fn each_guest_gets_its_own_devices_memory_and_link_end() {
        let a = run_args(&[
            "--devices",
            "2",
            "--fabric",
            "--memory-mib",
            "768",
            "--peer-cmd",
            "true",
        ])
        .unwrap();
        let rd = RunDir::new().unwrap();
        let g = guest_plans(&a);
        let q1 = args_of(&qemu_command(&a, &g[0], &rd, Path::new("g1.cpio")));
        let q2 = args_of(&qemu_command(&a, &g[1], &rd, Path::new("g2.cpio")));
        let has = |q: &[String], s: &str| q.iter().any(|x| x.contains(s));
        assert!(has(&q1, "mnic0.sock") && has(&q1, "mnic1.sock") && !has(&q1, "mnic2.sock"));
        assert!(has(&q2, "mnic2.sock") && has(&q2, "mnic3.sock") && !has(&q2, "mnic0.sock"));
        assert!(has(&q1, "size=768M") && has(&q2, "size=384M"));
        assert!(has(&q1, "link.sock,server=on,wait=off"));
        assert!(has(&q2, "link.sock") && !has(&q2, "server=on"));
        assert!(q2.windows(2).any(|w| w == ["-smp", "1"]));
        assert!(q2.iter().any(|x| x == "g2.cpio"));
    }

    #[test]
    fn one_guest_keeps_the_default_console_and_no_link() {
        let a = run_args(&["--devices", "1"]).unwrap();
        let rd = RunDir::new().unwrap();
        let q = args_of(&qemu_command(&a, &guest_plans(&a)[0], &rd, Path::new("i")));
        assert!(!q.iter().any(|x| x == "-serial" || x == "-chardev"));
        assert!(q.iter().any(|x| x.contains("mnic0.sock")));
    }

    #[test]
    fn kernel_cmdline_follows_the_options() {
        let a = run_args(&["--iommu", "--kunit", "rust_*", "--append", "foo=1"]).unwrap();
        let c = kernel_cmdline(&a);
        assert!(c.starts_with("console=ttyS0 "));
        assert!(c.contains(" loglevel=7 kunit.filter_glob=rust_*"));
        assert!(c.contains(" intel_iommu=on iommu.strict=1"));
        assert!(c.contains(" foo=1"));
        let plain = kernel_cmdline(&run_args(&[]).unwrap());
        assert!(plain.contains("kunit.enable=0") && !plain.contains("intel_iommu"));
        assert!(!plain.contains("MNIC_KILL_DEVICE_AFTER"));
        let kill = kernel_cmdline(&run_args(&["--kill-device-after", "20"]).unwrap());
        assert!(kill.contains(" MNIC_KILL_DEVICE_AFTER=20"));
    }

    #[test]
    fn each_guest_gets_its_own_job() {
        let a = run_args(&["--cmd", "job one", "--peer-cmd", "job two"]).unwrap();
        let rd = RunDir::new().unwrap();
        let base = rd.path("base.cpio");
        std::fs::write(&base, b"123").unwrap();
        let a = RunArgs { initrd: base, ..a };
        let g = guest_plans(&a);
        let one = std::fs::read(job_archive(&a, &g[0], &rd, "guest1").unwrap()).unwrap();
        let two = std::fs::read(job_archive(&a, &g[1], &rd, "guest2").unwrap()).unwrap();
        let contains = |hay: &[u8], s: &str| hay.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(contains(&one, "job one\n") && !contains(&one, "job two"));
        assert!(contains(&two, "job two\n") && !contains(&two, "job one"));
        // The base image, padded to 4 bytes, comes first.
        assert_eq!(&one[..4], b"123\0");
    }
}
