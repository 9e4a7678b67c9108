//! The report `mnic bench --json` prints and `mnic-bench-report` reads, written once.
//!
//! - [`Report`] and its parts ([`Row`], [`Ratio`], [`Bench`], [`Side`]) are the JSON
//!   shape: the tool serializes them, the report tool deserializes them.
//! - [`Fields`] is the ordered name → value map used for metrics, parameters and
//!   counters (JSON objects whose key order is the order of measurement).
//! - [`names`] holds every row, metric, ratio and parameter name both sides use, so a
//!   rename on one side cannot silently leave the other reading a key nobody writes.

mod fields;
pub mod names;
mod report;

pub use fields::Fields;
pub use report::{Bench, Ratio, Report, Row, Side};
