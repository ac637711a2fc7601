//! The policy service: stores enrollment policies and decides enrollment actions.
pub mod domain;
