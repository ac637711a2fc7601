//! Code generated from `proto/` by `build.rs` (protox, no system protoc).
#![allow(clippy::all, missing_docs)]

/// `enroll.policy.v1`.
pub mod policy {
    pub mod v1 {
        tonic::include_proto!("enroll.policy.v1");

        /// The encoded descriptors of this package and its imports, for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/policy_descriptor.bin"));
    }
}

/// `enroll.device.v1`.
pub mod device {
    pub mod v1 {
        tonic::include_proto!("enroll.device.v1");

        /// The encoded descriptors of this package and its imports, for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/device_descriptor.bin"));
    }
}
