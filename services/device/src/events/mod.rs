//! Encodings and delivery building blocks of enrollment events (`domain::events`): security
//! event token keys and signing (`signing`), the CAEP/Shared Signals tokens (`caep`), Standard
//! Webhooks bodies and signatures (`webhooks`), RFC 8936 poll tokens and messages (`poll`) and the SSRF-safe HTTP POST to receivers
//! (`receiver`).
//!
//! Pure functions and small adapters with no gRPC (tonic) and no database (sea-orm): the
//! outbox, its streams and its delivery worker compose them, and each is unit-tested here
//! on its own.

pub mod caep;
pub mod poll;
pub mod receiver;
pub mod signing;
pub mod webhooks;
