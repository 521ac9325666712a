//! Logging through the collector (`host.log`): each line is tagged with the
//! module's name and goes wherever the collector logs. Lines below the
//! collector's log level are dropped by the host, but the guest still pays
//! for formatting them: keep per-event logging at `debug`/`trace` and cheap.
//!
//! ```ignore
//! use event_collector_guest::prelude::*;
//! log::info("filter ready");
//! log::warn!("unknown reason {}", fields.reason);
//! ```

use crate::bindings::event_collector::filter::host;
pub use crate::bindings::event_collector::filter::types::Level;

/// Writes `message` to the collector's log at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

pub fn trace(message: &str) {
    log(Level::Trace, message)
}
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
pub fn info(message: &str) {
    log(Level::Info, message)
}
pub fn warn(message: &str) {
    log(Level::Warn, message)
}
pub fn error(message: &str) {
    log(Level::Error, message)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ec_log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// `log::trace!("fmt", args…)`
#[macro_export]
macro_rules! __ec_trace { ($($arg:tt)+) => { $crate::__ec_log!(Trace, $($arg)+) }; }
/// `log::debug!("fmt", args…)`
#[macro_export]
macro_rules! __ec_debug { ($($arg:tt)+) => { $crate::__ec_log!(Debug, $($arg)+) }; }
/// `log::info!("fmt", args…)`
#[macro_export]
macro_rules! __ec_info { ($($arg:tt)+) => { $crate::__ec_log!(Info, $($arg)+) }; }
/// `log::warn!("fmt", args…)`
#[macro_export]
macro_rules! __ec_warn { ($($arg:tt)+) => { $crate::__ec_log!(Warn, $($arg)+) }; }
/// `log::error!("fmt", args…)`
#[macro_export]
macro_rules! __ec_error { ($($arg:tt)+) => { $crate::__ec_log!(Error, $($arg)+) }; }

#[doc(inline)]
pub use crate::__ec_debug as debug;
#[doc(inline)]
pub use crate::__ec_error as error;
#[doc(inline)]
pub use crate::__ec_info as info;
#[doc(inline)]
pub use crate::__ec_trace as trace;
#[doc(inline)]
pub use crate::__ec_warn as warn;
