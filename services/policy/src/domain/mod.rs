//! Enrollment policy logic: no gRPC, no database. It lives in `enroll-policy-engine`, which
//! the device service runs too (decisions from the last policy set it received).
pub use enroll_policy_engine::{actions, authenticators, engine, patterns, pin, policy, settings};
