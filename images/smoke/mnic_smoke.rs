// SPDX-License-Identifier: GPL-2.0
//! The foundation's smoke module: proves that an out-of-tree Rust module built by
//! `make` against the cached kernel loads in the guest. The guest test checks its line.

use kernel::prelude::*;

module! {
    type: MnicSmoke,
    name: "mnic_smoke",
    authors: ["mnic developers"],
    description: "mnic build smoke test",
    license: "GPL",
}

struct MnicSmoke;

impl kernel::Module for MnicSmoke {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("mnic_smoke: Rust module loaded\n");
        Ok(MnicSmoke)
    }
}

impl Drop for MnicSmoke {
    fn drop(&mut self) {
        pr_info!("mnic_smoke: unloaded\n");
    }
}
