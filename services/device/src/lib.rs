//! The device service: carries out enrollment of WebAuthn devices and OTP tokens.
pub mod access;
pub mod app;
pub mod config;
pub mod device_edge;
pub mod device_service;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod policy_client;
pub mod policy_gate;
pub mod pool_index;
pub mod rate_limit;
pub mod relying_party;
pub mod store;
pub mod token_service;
pub mod web;
