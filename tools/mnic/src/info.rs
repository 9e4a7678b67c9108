//! `mnic info`: devices, capabilities, limits.

use mnic::abi::{self, work};
use mnic::{Device, Info};
use serde::Serialize;

use crate::error::CmdResult;
use crate::output::Table;

/// Limits of the ABI this tool was built against (the same for every device).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Limits {
    pub uabi_version: u32,
    pub copy_max_bytes: u32,
    pub traffic_op_max_bytes: u32,
    pub traffic_ops_max: u64,
    pub ring_entries_min: u32,
    pub ring_entries_max: u32,
    pub work_desc_bytes: usize,
    pub completion_bytes: usize,
    pub page_bytes: u64,
    pub huge_page_bytes: u64,
}

impl Limits {
    pub fn current() -> Self {
        Self {
            uabi_version: abi::UABI_VERSION,
            copy_max_bytes: work::COPY_MAX,
            traffic_op_max_bytes: work::TRAFFIC_OP_MAX,
            traffic_ops_max: work::TRAFFIC_OPS_MAX,
            ring_entries_min: 1 << abi::RING_LOG2_MIN,
            ring_entries_max: 1 << abi::RING_LOG2_MAX,
            work_desc_bytes: size_of::<abi::WorkDesc>(),
            completion_bytes: size_of::<abi::Completion>(),
            page_bytes: abi::pte::PAGE_SIZE,
            huge_page_bytes: abi::pte::HUGE_SIZE,
        }
    }
}

/// One device in the report: its info, or why it could not be read.
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub index: u32,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole `mnic info` report.
#[derive(Debug, Serialize)]
pub struct InfoReport {
    pub devices: Vec<DeviceReport>,
    pub limits: Limits,
}

pub fn report(devs: Vec<(Device, mnic::Result<Info>)>) -> InfoReport {
    InfoReport {
        devices: devs
            .into_iter()
            .map(|(d, r)| {
                let (info, error) = match r {
                    Ok(i) => (Some(i), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                DeviceReport {
                    index: d.index(),
                    path: d.path().display().to_string(),
                    info,
                    error,
                }
            })
            .collect(),
        limits: Limits::current(),
    }
}

pub fn render(r: &InfoReport) -> String {
    let mut out = String::new();
    if r.devices.is_empty() {
        out.push_str("no mnic devices (/dev/mnic*): is the driver loaded?\n\n");
    }
    for d in &r.devices {
        out.push_str(&format!("{} (mnic{})\n", d.path, d.index));
        match (&d.info, &d.error) {
            (Some(i), _) => {
                out.push_str(&format!(
                    "  hardware version  {}.{}\n  user ABI          {}\n  capabilities      {}\n  contexts          {}\n  registrations     {} per context\n",
                    i.hw_major,
                    i.hw_minor,
                    i.abi_version,
                    i.caps.names().join(" "),
                    i.num_contexts,
                    i.max_registrations
                ));
            }
            (None, Some(e)) => out.push_str(&format!("  error: {e}\n")),
            (None, None) => {}
        }
        out.push('\n');
    }
    let l = &r.limits;
    let mut t = Table::new(&["limit", "value"]);
    t.row(&["user ABI version", &l.uabi_version.to_string()]);
    t.row(&["COPY max bytes", &l.copy_max_bytes.to_string()]);
    t.row(&["TRAFFIC op size max", &l.traffic_op_max_bytes.to_string()]);
    t.row(&["TRAFFIC ops max", &l.traffic_ops_max.to_string()]);
    t.row(&[
        "queue entries",
        &format!("{}..={}", l.ring_entries_min, l.ring_entries_max),
    ]);
    t.row(&["work descriptor bytes", &l.work_desc_bytes.to_string()]);
    t.row(&["completion bytes", &l.completion_bytes.to_string()]);
    t.row(&[
        "page / huge page",
        &format!("{} / {}", l.page_bytes, l.huge_page_bytes),
    ]);
    out.push_str(&t.render());
    out
}

pub fn run(device: Option<u32>, json: bool) -> CmdResult {
    let devs = match device {
        Some(n) => vec![Device::from_index(n)],
        None => Device::list()?,
    };
    let rows = devs
        .into_iter()
        .map(|d| {
            // Opening takes a hardware context for the duration of the INFO call.
            let r = d.context().map(|c| *c.info());
            (d, r)
        })
        .collect();
    let r = report(rows);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render(&r));
    }
    if r.devices.iter().any(|d| d.error.is_some()) {
        return Err("some devices could not be read".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic::abi::MnicInfo;

    #[test]
    fn json_shape() {
        let info: Info = MnicInfo {
            abi_version: 1,
            hw_version: 0x10000,
            caps: abi::caps::ALL,
            num_contexts: 256,
            ctx: 0,
            minor: 0,
            max_registrations: 1024,
            node: 0xffff,
        }
        .into();
        let r = report(vec![
            (Device::from_index(0), Ok(info)),
            (Device::from_index(1), Err(mnic::Error::NoDevice(None))),
        ]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["devices"][0]["index"], 0);
        assert_eq!(v["devices"][0]["path"], "/dev/mnic0");
        assert_eq!(v["devices"][0]["info"]["num_contexts"], 256);
        assert_eq!(v["devices"][0]["info"]["caps"][3], "doorbell_bar");
        assert!(v["devices"][0].get("error").is_none());
        assert!(v["devices"][1].get("info").is_none());
        assert!(v["devices"][1]["error"].is_string());
        assert_eq!(v["limits"]["copy_max_bytes"], 64 << 20);
        assert_eq!(v["limits"]["ring_entries_max"], 4096);
        let text = render(&r);
        assert!(text.contains("capabilities      huge_2m traffic_gen stale_check doorbell_bar"));
        assert!(text.contains("error: no mnic device found"));
    }
}
