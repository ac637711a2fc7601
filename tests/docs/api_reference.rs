//! `docs/api.md`: the API reference, generated from the comments in `proto/` (compiled with
//! protox and its source info, so the comments are the only source of truth) and compared
//! with the committed file.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto,
};

const PROTO_FILES: [&str; 2] = [
    "enroll/policy/v1/policy.proto",
    "enroll/device/v1/device.proto",
];
const DOC: &str = "docs/api.md";
const ROLES: [&str; 4] = ["admin", "proxy", "ops", "service"];

/// Envoy's external authorization check, which the device server answers next to its own
/// service when its gate is on. Its messages are Envoy's (the `envoy-types` crate), not in
/// `proto/`: its row and section are written here.
const EXT_AUTHZ_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
const EXT_AUTHZ_ROLES: [&str; 2] = ["admin", "proxy"];

// Field numbers of descriptor.proto, the steps of a source-info location path.
const FILE_PACKAGE: i32 = 2;
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_ENUM_TYPE: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// Leading comments of one file, by source-info path.
struct Comments(HashMap<Vec<i32>, String>);

impl Comments {
    fn of(file: &FileDescriptorProto) -> Self {
        let locations = file
            .source_code_info
            .iter()
            .flat_map(|info| info.location.iter());
        Self(
            locations
                .filter_map(|location| {
                    let text = location.leading_comments.as_deref()?;
                    Some((location.path.clone(), clean_comment(text)))
                })
                .collect(),
        )
    }

    fn get(&self, path: &[i32]) -> &str {
        self.0.get(path).map(String::as_str).unwrap_or("")
    }
}

/// The comment's lines without the one space `// ` leaves, trimmed at both ends.
fn clean_comment(text: &str) -> String {
    text.lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// Markdown text: `<` and `>` outside code spans are escaped (`<api key>` is no HTML tag).
fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for character in text.chars() {
        match character {
            '`' => {
                in_code = !in_code;
                out.push('`');
            }
            '<' if !in_code => out.push_str("&lt;"),
            '>' if !in_code => out.push_str("&gt;"),
            other => out.push(other),
        }
    }
    out
}

/// Text for one table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    prose(&text.split_whitespace().collect::<Vec<_>>().join(" ")).replace('|', "\\|")
}

/// An RPC comment split into its description and its `Roles:` and `Errors:` parts.
struct RpcComment {
    description: String,
    roles: Vec<String>,
    errors: Vec<String>,
}

fn parse_rpc_comment(rpc: &str, comment: &str) -> Result<RpcComment, String> {
    let roles_at = comment
        .find("\nRoles:")
        .map(|at| at + 1)
        .or_else(|| comment.starts_with("Roles:").then_some(0))
        .ok_or_else(|| format!("the comment of rpc {rpc} names no `Roles:`"))?;
    let errors_at = comment[roles_at..]
        .find("\nErrors:")
        .map(|at| roles_at + at + 1)
        .ok_or_else(|| format!("the comment of rpc {rpc} names no `Errors:` after its roles"))?;
    let roles_text = comment[roles_at + "Roles:".len()..errors_at].trim();
    let roles: Vec<String> = roles_text
        .trim_end_matches('.')
        .split(',')
        .map(|role| role.trim().to_owned())
        .collect();
    if let Some(unknown) = roles.iter().find(|role| !ROLES.contains(&role.as_str())) {
        return Err(format!(
            "rpc {rpc}: `Roles:` names `{unknown}`, not one of {ROLES:?}"
        ));
    }
    let errors_text = comment[errors_at + "Errors:".len()..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(RpcComment {
        description: comment[..roles_at].trim().to_owned(),
        roles,
        errors: split_top_level(&errors_text, ';'),
    })
}

/// Splits at `separator` outside parentheses: `A (x; y); B` is `A (x; y)` and `B`.
fn split_top_level(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for character in text.chars() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if character == separator && depth == 0 {
            parts.push(current.trim().to_owned());
            current.clear();
        } else {
            current.push(character);
        }
    }
    parts.push(current.trim().to_owned());
    parts.retain(|part| !part.is_empty());
    parts
}

/// Heading anchors are the full names (`enroll.policy.v1.Policy`): unique across packages.
fn anchor(full_name: &str) -> String {
    format!("<a id=\"{full_name}\"></a>")
}

/// A message or enum name, linked when it is one of ours.
fn type_link(type_name: &str, known: &BTreeMap<String, String>) -> String {
    let full = type_name.trim_start_matches('.');
    match known.get(full) {
        Some(short) => format!("[`{short}`](#{full})"),
        None => format!("`{full}`"),
    }
}

fn scalar_name(kind: Type) -> &'static str {
    match kind {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group | Type::Message | Type::Enum => "",
    }
}

fn field_type(
    field: &FieldDescriptorProto,
    message: &DescriptorProto,
    known: &BTreeMap<String, String>,
) -> String {
    let base = |field: &FieldDescriptorProto| match field.r#type() {
        Type::Message | Type::Enum | Type::Group => type_link(field.type_name(), known),
        scalar => format!("`{}`", scalar_name(scalar)),
    };
    if field.label() == Label::Repeated {
        let entry_name = field.type_name().rsplit('.').next().unwrap_or_default();
        let map_entry = message.nested_type.iter().find(|nested| {
            nested.name() == entry_name && nested.options.as_ref().is_some_and(|o| o.map_entry())
        });
        if let Some(entry) = map_entry {
            let key = entry.field.iter().find(|f| f.number() == 1);
            let value = entry.field.iter().find(|f| f.number() == 2);
            if let (Some(key), Some(value)) = (key, value) {
                return format!("map&lt;{}, {}&gt;", base(key), base(value));
            }
        }
        return format!("repeated {}", base(field));
    }
    if field.proto3_optional() {
        return format!("optional {}", base(field));
    }
    base(field)
}

/// Every message and enum of the files: full name -> short name.
fn known_types(files: &[FileDescriptorProto]) -> BTreeMap<String, String> {
    let mut known = BTreeMap::new();
    for file in files {
        let names = file
            .message_type
            .iter()
            .map(DescriptorProto::name)
            .chain(file.enum_type.iter().map(EnumDescriptorProto::name));
        for name in names {
            known.insert(format!("{}.{name}", file.package()), name.to_owned());
        }
    }
    known
}

fn render_roles_matrix(out: &mut String, files: &[FileDescriptorProto]) -> Result<(), String> {
    out.push_str("| RPC | admin | proxy | ops | service |\n|---|:-:|:-:|:-:|:-:|\n");
    for (grpc_path, roles) in documented_roles(files)? {
        let (service, method) = grpc_path
            .trim_start_matches('/')
            .split_once('/')
            .ok_or_else(|| format!("`{grpc_path}` is not /service/method"))?;
        let short_service = service.rsplit('.').next().unwrap_or(service);
        let _ = write!(out, "| {short_service} [`{method}`](#{service}.{method}) |");
        for role in ROLES {
            let allowed = roles.iter().any(|r| r == role);
            out.push_str(if allowed { " ✓ |" } else { " |" });
        }
        out.push('\n');
    }
    out.push_str("| Envoy `Authorization` [`Check`](#envoy-external-authorization) |");
    for role in ROLES {
        out.push_str(if EXT_AUTHZ_ROLES.contains(&role) {
            " ✓ |"
        } else {
            " |"
        });
    }
    out.push('\n');
    out.push_str(
        "| `grpc.health.v1.Health`, server reflection | anyone | anyone | anyone | anyone |\n\n",
    );
    out.push_str(EXT_AUTHZ);
    Ok(())
}

const EXT_AUTHZ: &str = "\
## Envoy external authorization

With `[gate] listen` set, the device server also answers Envoy's `ext_authz` HTTP filter on its
gRPC port: `envoy.service.auth.v3.Authorization/Check` (`transport_api_version: V3`; the
messages are Envoy's own, `envoy/service/auth/v3/external_auth.proto`). Envoy sends the proxy's
key in `grpc_service.initial_metadata` (`authorization: Bearer <key>`). A check reads the
original request's headers (`attributes.request.http.headers`, or `header_map` with
`encode_raw_headers`), its scheme, host and path, the client address
(`attributes.source.address`) and the route's required device type: the context extension
`device_type` (per-route `check_settings.context_extensions`), else the `gate.device_type_header`
header, else `gate.default_device_type`. A plain-header identity is believed only when the
connection Envoy calls over comes from `gate.trusted_proxies`. The answer, as Envoy applies it:

| verdict | `status` | Envoy |
|---|---|---|
| allowed | `OK` | passes the request on with `x-enroll-user`, `x-enroll-realm`, `x-enroll-device-id` and `x-enroll-device-type` set (overwriting client-sent ones), `cookie` without the gate's session cookie (removed when nothing is left) and any other `x-enroll-*` removed; a refreshed session cookie is added to the response (`set-cookie`) |
| no identity | `UNAUTHENTICATED` | answers 401 `{\"error\": \"UNAUTHENTICATED\", ...}` |
| no valid device session | `UNAUTHENTICATED` | a browser navigation gets 302 to the sign-in page (`location`), anything else 401 `{\"error\": \"DEVICE_SESSION_REQUIRED\", \"reason\": ..., \"signin\": ...}` (or `DEVICE_REVOKED` etc.); a dead session's cookie is deleted (`set-cookie`) |
| route or host refused | `PERMISSION_DENIED` | answers 403 (`DEVICE_TYPE_MISSING`, `DEVICE_TYPE_INVALID`, `HOST_NOT_PROTECTED`) |
| the gate cannot decide | `UNAVAILABLE` | answers 503 `GATE_UNAVAILABLE` |

Every refusal is a denied response with `x-enroll-gate-error: <code>`, never an
`error_response`: Envoy's `failure_mode_allow` applies to errors, so it cannot open the door.
An example Envoy configuration: [`deploy/gate/envoy/envoy.yaml`](../deploy/gate/envoy/envoy.yaml).
The end-to-end test `gate_envoy` sends checks as Envoy does and asserts these fields.

";

fn render_service(
    out: &mut String,
    file: &FileDescriptorProto,
    index: usize,
    service: &ServiceDescriptorProto,
    known: &BTreeMap<String, String>,
) -> Result<(), String> {
    let comments = Comments::of(file);
    let full = format!("{}.{}", file.package(), service.name());
    let _ = writeln!(out, "### {}service `{full}`\n", anchor(&full));
    let _ = writeln!(
        out,
        "{}\n",
        prose(comments.get(&[FILE_SERVICE, index as i32]))
    );
    for (method_index, method) in service.method.iter().enumerate() {
        let path = [
            FILE_SERVICE,
            index as i32,
            SERVICE_METHOD,
            method_index as i32,
        ];
        let parsed = parse_rpc_comment(method.name(), comments.get(&path))?;
        let method_full = format!("{full}.{}", method.name());
        let _ = writeln!(out, "#### {}{}\n", anchor(&method_full), method.name());
        let _ = writeln!(
            out,
            "Request {}, response {}{}.\n",
            type_link(method.input_type(), known),
            if method.server_streaming() {
                "a stream of "
            } else {
                ""
            },
            type_link(method.output_type(), known)
        );
        let _ = writeln!(out, "{}\n", prose(&parsed.description));
        let _ = writeln!(out, "Roles: {}.\n", parsed.roles.join(", "));
        out.push_str("Status codes:\n\n");
        for error in &parsed.errors {
            let _ = writeln!(out, "- {}", prose(error));
        }
        out.push('\n');
    }
    Ok(())
}

fn render_message(
    out: &mut String,
    file: &FileDescriptorProto,
    index: usize,
    message: &DescriptorProto,
    known: &BTreeMap<String, String>,
) {
    let comments = Comments::of(file);
    let full = format!("{}.{}", file.package(), message.name());
    let _ = writeln!(out, "#### {}{}\n", anchor(&full), message.name());
    let comment = comments.get(&[FILE_MESSAGE_TYPE, index as i32]);
    if !comment.is_empty() {
        let _ = writeln!(out, "{}\n", prose(comment));
    }
    if message.field.is_empty() {
        out.push_str("No fields.\n\n");
        return;
    }
    out.push_str("| field | # | type | description |\n|---|--:|---|---|\n");
    for (field_index, field) in message.field.iter().enumerate() {
        let path = [
            FILE_MESSAGE_TYPE,
            index as i32,
            MESSAGE_FIELD,
            field_index as i32,
        ];
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            field.name(),
            field.number(),
            field_type(field, message, known),
            cell(comments.get(&path))
        );
    }
    out.push('\n');
}

fn render_enum(
    out: &mut String,
    file: &FileDescriptorProto,
    index: usize,
    enumeration: &EnumDescriptorProto,
) {
    let comments = Comments::of(file);
    let full = format!("{}.{}", file.package(), enumeration.name());
    let _ = writeln!(out, "#### {}{}\n", anchor(&full), enumeration.name());
    let comment = comments.get(&[FILE_ENUM_TYPE, index as i32]);
    if !comment.is_empty() {
        let _ = writeln!(out, "{}\n", prose(comment));
    }
    out.push_str("| value | # | description |\n|---|--:|---|\n");
    for (value_index, value) in enumeration.value.iter().enumerate() {
        let path = [FILE_ENUM_TYPE, index as i32, ENUM_VALUE, value_index as i32];
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            value.name(),
            value.number(),
            cell(comments.get(&path))
        );
    }
    out.push('\n');
}

const INTRO: &str = "\
# API reference

<!-- Generated from the comments in proto/ by tests/docs/api_reference.rs: do not edit.
     Change the proto comments, then run
     ENROLL_BLESS_DOCS=1 cargo test -p enroll-e2e --test docs -->

Generated from the comments in [`proto/`](../proto): change those, then regenerate with
`ENROLL_BLESS_DOCS=1 cargo test -p enroll-e2e --test docs` (the same test fails while this
file is stale). Both servers also serve gRPC server reflection (v1 and v1alpha), so
`grpcurl -plaintext localhost:50051 describe enroll.policy.v1.PolicyService` shows the
same schema without this file; the [cookbook](cookbook.md) shows calls for operator tasks.

## Callers and roles

Every RPC but health and reflection needs `authorization: Bearer <api key>`. Keys are
configured as SHA-256 digests in `[auth] api_keys` (`enroll-policy hash-key` prints one; API
keys are random 256-bit strings, so a fast hash suffices and costs microseconds per call);
see [configuration](configuration.md#auth-caller-api-keys). No or unknown key: `UNAUTHENTICATED`; a role the
RPC does not allow: `PERMISSION_DENIED`. The roles: `admin` (the console backend:
everything), `proxy` (the identity proxy: checks and ceremonies for its users), `ops`
(operators: read-only), `service` (the device service calling the policy service). The
end-to-end test `auth_matrix` checks every cell of this table on both servers.

";

/// The whole document.
pub fn render(files: &[FileDescriptorProto]) -> Result<String, String> {
    let known = known_types(files);
    let mut out = String::from(INTRO);
    render_roles_matrix(&mut out, files)?;
    for file in files {
        let comments = Comments::of(file);
        let _ = writeln!(out, "## Package `{}`\n", file.package());
        let _ = writeln!(
            out,
            "Source: [`proto/{}`](../proto/{}).\n",
            file.name(),
            file.name()
        );
        let package_comment = comments.get(&[FILE_PACKAGE]);
        if !package_comment.is_empty() {
            let _ = writeln!(out, "{}\n", prose(package_comment));
        }
        for (index, service) in file.service.iter().enumerate() {
            render_service(&mut out, file, index, service, &known)?;
        }
        let _ = writeln!(out, "### Messages of `{}`\n", file.package());
        for (index, message) in file.message_type.iter().enumerate() {
            render_message(&mut out, file, index, message, &known);
        }
        let _ = writeln!(out, "### Enums of `{}`\n", file.package());
        for (index, enumeration) in file.enum_type.iter().enumerate() {
            render_enum(&mut out, file, index, enumeration);
        }
    }
    Ok(format!("{}\n", out.trim_end()))
}

fn compile() -> Vec<FileDescriptorProto> {
    let mut compiler = protox::Compiler::new([crate::repo_path("proto")]).unwrap();
    compiler.include_imports(false).include_source_info(true);
    compiler.open_files(PROTO_FILES).unwrap();
    compiler.file_descriptor_set().file
}

#[test]
fn api_reference_is_generated_from_the_proto_comments() {
    let files = compile();
    assert_eq!(
        files.len(),
        PROTO_FILES.len(),
        "one descriptor per proto file"
    );
    let generated = render(&files).unwrap_or_else(|problem| panic!("proto comments: {problem}"));
    let path = crate::repo_path(DOC);
    if crate::blessing() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    let first_difference = committed
        .lines()
        .zip(generated.lines())
        .position(|(old, new)| old != new)
        .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
    panic!(
        "{DOC} is stale: it no longer matches the proto comments (first difference at line \
         {}: committed {:?}, generated {:?}). Regenerate it with `{}=1 cargo test -p enroll-e2e \
         --test docs` and commit the result.",
        first_difference + 1,
        committed
            .lines()
            .nth(first_difference)
            .unwrap_or("<end of file>"),
        generated
            .lines()
            .nth(first_difference)
            .unwrap_or("<end of file>"),
        crate::BLESS_VAR
    );
}

#[test]
fn rpc_comments_split_into_roles_and_status_codes() {
    let parsed = parse_rpc_comment(
        "Get",
        "Reads one.\nRoles: admin, ops.\nErrors: NOT_FOUND (no such; really); UNAVAILABLE (down).",
    )
    .unwrap();
    assert_eq!(parsed.description, "Reads one.");
    assert_eq!(parsed.roles, ["admin", "ops"]);
    assert_eq!(
        parsed.errors,
        ["NOT_FOUND (no such; really)", "UNAVAILABLE (down)."]
    );
    let missing = parse_rpc_comment("Get", "Reads one.").err().unwrap();
    assert!(
        missing.contains("Get") && missing.contains("Roles"),
        "{missing}"
    );
    let unknown = parse_rpc_comment("Get", "Roles: root.\nErrors: none")
        .err()
        .unwrap();
    assert!(unknown.contains("root"), "{unknown}");
}

/// The roles each RPC's comment names, by gRPC path (`/enroll.policy.v1.PolicyService/GetPolicy`).
fn documented_roles(files: &[FileDescriptorProto]) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut rpcs = Vec::new();
    for file in files {
        let comments = Comments::of(file);
        for (service_index, service) in file.service.iter().enumerate() {
            for (method_index, method) in service.method.iter().enumerate() {
                let path = [
                    FILE_SERVICE,
                    service_index as i32,
                    SERVICE_METHOD,
                    method_index as i32,
                ];
                let parsed = parse_rpc_comment(method.name(), comments.get(&path))?;
                let grpc_path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                rpcs.push((grpc_path, parsed.roles));
            }
        }
    }
    Ok(rpcs)
}

/// The roles column of the generated document is what the servers enforce: each RPC's
/// `Roles:` comment matches the service's access table (`access.rs`).
#[test]
fn documented_roles_are_the_enforced_roles() {
    use enroll_shared::auth::Access;
    let rpcs = documented_roles(&compile()).unwrap_or_else(|problem| panic!("{problem}"));
    assert_eq!(rpcs.len(), 53, "every RPC of both services");
    let mut mismatches = Vec::new();
    for (path, documented) in rpcs {
        let access = if path.starts_with("/enroll.policy.") {
            enroll_policy::access::access(&path)
        } else {
            enroll_device::grpc::access::access(&path)
        };
        let enforced: Vec<String> = match access {
            Access::Roles(roles) => roles
                .iter()
                .map(|role| format!("{role:?}").to_lowercase())
                .collect(),
            other => vec![format!("{other:?}")],
        };
        let sorted = |roles: &[String]| {
            let mut roles = roles.to_vec();
            roles.sort();
            roles
        };
        if sorted(&documented) != sorted(&enforced) {
            mismatches.push(format!(
                "{path}: the proto comment says `Roles: {}`, the server allows {enforced:?}",
                documented.join(", ")
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let enforced: Vec<String> = match enroll_device::grpc::access::access(EXT_AUTHZ_PATH) {
        Access::Roles(roles) => roles
            .iter()
            .map(|role| format!("{role:?}").to_lowercase())
            .collect(),
        other => vec![format!("{other:?}")],
    };
    assert_eq!(enforced, EXT_AUTHZ_ROLES, "{EXT_AUTHZ_PATH}");
}
