//! NUMA page migration for the guest tests: the guest boots with `numa=fake=2`, so pages can
//! be moved between two nodes with move_pages(2).

use std::fs;

use crate::{check, os_err, Map, Outcome, PAGE};

/// MPOL_MF_MOVE of move_pages(2) (not in the libc crate).
const MPOL_MF_MOVE: i32 = 1 << 1;

/// move_pages(2) on this process: with `nodes`, moves each page there; without, only reports
/// each page's node in `status` (or -errno).
pub fn move_pages(
    pages: &[usize],
    nodes: Option<&[i32]>,
    status: &mut [i32],
) -> Result<i64, String> {
    let ptrs: Vec<*mut libc::c_void> = pages.iter().map(|p| *p as *mut _).collect();
    // SAFETY: move_pages(2) on our own process with arrays of `pages.len()` entries.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            ptrs.len() as libc::c_ulong,
            ptrs.as_ptr(),
            nodes.map_or(std::ptr::null(), |n| n.as_ptr()),
            status.as_mut_ptr(),
            MPOL_MF_MOVE,
        )
    };
    check(rc >= 0, || os_err("move_pages"))?;
    Ok(rc)
}

/// The skip of a migration case on a guest with one NUMA node (numa=fake=2 gives two).
pub fn one_numa_node() -> Option<Outcome> {
    fs::metadata("/sys/devices/system/node/node1")
        .is_err()
        .then(|| Outcome::Skip("one NUMA node (numa=fake=2 missing)".into()))
}

/// Moves the first `n` pages of `m` to the node page 0 is not on: (from, to, per-page node or
/// -errno after the move).
pub fn move_to_other_node(m: &Map, n: usize) -> Result<(i32, i32, Vec<i32>), String> {
    let pages: Vec<usize> = (0..n).map(|i| m.ptr + i * PAGE).collect();
    let mut status = vec![-1i32; n];
    move_pages(&pages, None, &mut status)?;
    let from = status[0];
    let to = if from == 0 { 1 } else { 0 };
    move_pages(&pages, Some(&vec![to; n]), &mut status)?;
    Ok((from, to, status))
}
