//! `mnic`: placeholder, replaced below.
fn main() {}
