//! The on-disk spill queue of an exporter (`overflow = "spill"`): records
//! that do not fit in the exporter's memory queue, or that wait while its sink
//! is down, are written here, fsynced, and read back in order once the sink
//! accepts them again, also after a restart.
//!
//! [`store`] owns the files (segments, index, checksums, cap); [`codec`] turns
//! a record into the bytes of one spilled entry and back. The pipeline's
//! queue (`crate::pipeline::queue`) decides what goes to disk and when.

pub mod codec;
pub mod store;

pub use store::{Damage, ReadBatch, SpillError, SpillOptions, SpillProblem, SpillStore};
