//! Device-service logic that knows nothing of gRPC or the database.
pub mod devices;
pub mod import;
pub mod names;
pub mod otp;
pub mod pins;
pub mod random;
pub mod secrets;
pub mod tokens;
