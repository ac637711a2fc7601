//! Compiles the protos with protox (no system protoc) and writes, per service, the
//! descriptor set that its server reflection serves.
use std::path::{Path, PathBuf};

const PROTOS: [(&str, &str); 2] = [
    ("policy", "enroll/policy/v1/policy.proto"),
    ("device", "enroll/device/v1/device.proto"),
];

fn compiler(root: &Path, files: &[&str]) -> Result<protox::Compiler, protox::Error> {
    let mut compiler = protox::Compiler::new([root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files)?;
    Ok(compiler)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for (service, file) in PROTOS {
        let descriptors = compiler(&proto_root, &[file])?.encode_file_descriptor_set();
        std::fs::write(
            out_dir.join(format!("{service}_descriptor.bin")),
            descriptors,
        )?;
    }
    let all: Vec<&str> = PROTOS.iter().map(|(_, file)| *file).collect();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler(&proto_root, &all)?.file_descriptor_set())?;
    Ok(())
}
