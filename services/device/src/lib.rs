//! The device service: carries out enrollment of WebAuthn devices and OTP tokens.
pub mod access;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod policy_client;
pub mod pool_index;
pub mod rate_limit;
pub mod store;
pub mod token_service;
