//! The policy service: stores enrollment policies and decides enrollment actions.
pub mod access;
pub mod app;
pub mod cache;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;
pub mod store;
pub mod watchers;
