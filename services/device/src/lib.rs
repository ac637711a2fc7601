//! The device service: carries out enrollment of WebAuthn devices and OTP tokens.
//!
//! Layers, imports pointing inward: `grpc` and `web` (the edges) -> `service` (use cases,
//! domain values in and out) -> `domain` (rules, no gRPC, no database) and `store`
//! (persistence); `adapters` implement the ports of `service::ports`. Only `app` (start-up)
//! sees everything.
pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod forwarding;
pub mod gate;
pub mod grpc;
pub mod service;
pub mod store;
pub mod web;
