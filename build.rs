//! Compiles every `src/bpf/<tool>.bpf.c` with clang (CO-RE, against the committed
//! per-arch vmlinux.h) and generates its Rust skeleton into OUT_DIR.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const TOOLS: &[&str] = &[
    "profile",
    "offcpu",
    "runqlat",
    "syscount",
    "biolatency",
    "funclatency",
    "runqlen",
    "fslatency",
    "tcpconnlat",
    "tcplife",
    "tcpretrans",
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("no committed vmlinux.h for target arch {other}"),
        Err(_) => "x86",
    };
    let vmlinux_dir = format!("src/bpf/vmlinux/{arch}");
    println!("cargo:rerun-if-changed=src/bpf/common.h");
    println!("cargo:rerun-if-changed=src/bpf/histogram.h");
    println!("cargo:rerun-if-changed=src/bpf/sock.h");
    println!("cargo:rerun-if-changed=src/bpf/unwind.h");
    println!("cargo:rerun-if-changed={vmlinux_dir}/vmlinux.h");
    for tool in TOOLS {
        let source = format!("src/bpf/{tool}.bpf.c");
        println!("cargo:rerun-if-changed={source}");
        SkeletonBuilder::new()
            .source(&source)
            .clang_args(["-I", &vmlinux_dir, "-I", "src/bpf", "-Wall", "-O2", "-g"])
            .build_and_generate(out_dir.join(format!("{tool}.skel.rs")))
            .unwrap_or_else(|err| panic!("building {source}: {err:#}"));
    }
}
