//! Persistence of the device service.
pub mod devices;
pub mod entities;
pub mod migration;
pub mod owner_names;
pub mod token_changes;
pub mod tokens;
