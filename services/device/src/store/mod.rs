//! Persistence of the device service.
pub mod migration;
