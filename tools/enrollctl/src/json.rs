//! Proto messages as JSON: the canonical proto3 JSON mapping (enums by name, timestamps
//! RFC 3339, 64-bit integers as strings) with the proto field names and every field
//! present, so scripts see one stable shape (objects have sorted keys). Built from the
//! services' own descriptors, so it cannot drift from the protos.
use std::sync::OnceLock;

use enroll_shared::proto::{device::v1 as device_pb, policy::v1 as policy_pb};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use crate::error::CliError;

/// A generated message and its full proto name.
pub trait ProtoMessage: Message + Sized {
    const FULL_NAME: &'static str;
}

macro_rules! proto_names {
    ($($module:ident :: $type:ident => $name:literal),* $(,)?) => {
        $(impl ProtoMessage for $module::$type {
            const FULL_NAME: &'static str = $name;
        })*
    };
}

proto_names! {
    policy_pb::Policy => "enroll.policy.v1.Policy",
    policy_pb::PolicyConflict => "enroll.policy.v1.PolicyConflict",
    policy_pb::PolicyChange => "enroll.policy.v1.PolicyChange",
    policy_pb::EvaluateEnrollmentResponse => "enroll.policy.v1.EvaluateEnrollmentResponse",
    policy_pb::EnrollmentSettings => "enroll.policy.v1.EnrollmentSettings",
    device_pb::Token => "enroll.device.v1.Token",
    device_pb::EnrollTokenResponse => "enroll.device.v1.EnrollTokenResponse",
    device_pb::ImportRowError => "enroll.device.v1.ImportRowError",
    device_pb::ReportLostTokenResponse => "enroll.device.v1.ReportLostTokenResponse",
    device_pb::EnrollmentLink => "enroll.device.v1.EnrollmentLink",
    device_pb::OtpEnrollmentLink => "enroll.device.v1.OtpEnrollmentLink",
    device_pb::Device => "enroll.device.v1.Device",
    device_pb::AuditEvent => "enroll.device.v1.AuditEvent",
    device_pb::EnrollmentEvent => "enroll.device.v1.EnrollmentEvent",
    device_pb::EventStream => "enroll.device.v1.EventStream",
    device_pb::CreateEventStreamResponse => "enroll.device.v1.CreateEventStreamResponse",
    device_pb::RotateEventStreamSecretResponse => "enroll.device.v1.RotateEventStreamSecretResponse",
    device_pb::RotateEventSigningKeyResponse => "enroll.device.v1.RotateEventSigningKeyResponse",
    device_pb::DeadLetter => "enroll.device.v1.DeadLetter",
    device_pb::RedeliverEventsResponse => "enroll.device.v1.RedeliverEventsResponse",
    device_pb::VerifyEventStreamResponse => "enroll.device.v1.VerifyEventStreamResponse",
}

/// Both services' descriptors in one pool (their shared imports once).
fn pool() -> Result<&'static DescriptorPool, CliError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut files = prost_types::FileDescriptorSet::default();
        for encoded in [
            policy_pb::FILE_DESCRIPTOR_SET,
            device_pb::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(encoded)
                .map_err(|error| error.to_string())?;
            for file in set.file {
                if !files.file.iter().any(|known| known.name == file.name) {
                    files.file.push(file);
                }
            }
        }
        DescriptorPool::from_file_descriptor_set(files).map_err(|error| error.to_string())
    })
    .as_ref()
    .map_err(|error| CliError::local(format!("the built-in proto descriptors: {error}")))
}

/// The descriptor of a message by full name.
pub fn descriptor(full_name: &str) -> Result<MessageDescriptor, CliError> {
    pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| CliError::local(format!("no descriptor for {full_name}")))
}

/// `message` as a reflective message (to walk its fields in declaration order).
pub fn dynamic<M: ProtoMessage>(message: &M) -> Result<DynamicMessage, CliError> {
    DynamicMessage::decode(
        descriptor(M::FULL_NAME)?,
        message.encode_to_vec().as_slice(),
    )
    .map_err(|error| CliError::local(format!("re-decoding {}: {error}", M::FULL_NAME)))
}

/// `message` as JSON (see the module comment).
pub fn to_json<M: ProtoMessage>(message: &M) -> Result<Value, CliError> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    dynamic(message)?
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|error| CliError::local(format!("encoding {} as JSON: {error}", M::FULL_NAME)))
}

/// Several messages as a JSON array.
pub fn list_json<M: ProtoMessage>(messages: &[M]) -> Result<Value, CliError> {
    messages
        .iter()
        .map(to_json)
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_use_proto_field_names_enum_names_and_every_field() {
        let token = device_pb::Token {
            serial: "TOTP0123456789AB".into(),
            r#type: device_pb::TokenType::Totp as i32,
            state: device_pb::TokenState::Enabled as i32,
            period: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = to_json(&token).unwrap();
        assert_eq!(json["serial"], "TOTP0123456789AB");
        assert_eq!(json["type"], "TOKEN_TYPE_TOTP");
        assert_eq!(json["state"], "TOKEN_STATE_ENABLED");
        assert_eq!(json["has_pin"], false, "defaults are present");
        assert_eq!(json["failure_count"], 0);
        assert_eq!(json["period"], "30s");
        assert_eq!(json["create_time"], "2027-01-15T08:00:00Z");
        assert!(json.get("hasPin").is_none(), "proto names, not camelCase");
    }

    #[test]
    fn int64_is_a_string_and_maps_are_objects() {
        let event = device_pb::AuditEvent {
            id: 42,
            ..Default::default()
        };
        assert_eq!(to_json(&event).unwrap()["id"], "42");
        let policy = policy_pb::Policy {
            name: "p".into(),
            actions: [("tokenlabel".to_owned(), "<u>".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(to_json(&policy).unwrap()["actions"]["tokenlabel"], "<u>");
    }
}
