fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from the protoc-bin-vendored crate so that a fresh machine
    // needs no system install. Handing it to the build through the config
    // (not `set_var`) keeps this free of unsafe code.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Record payloads travel as `bytes::Bytes`: decoding a request slices the
    // receive buffer instead of copying every key and value.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(config, &["proto/replog.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/replog.proto");
    Ok(())
}
