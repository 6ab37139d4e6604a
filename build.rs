//! Compiles every `src/bpf/<tool>.bpf.c` with clang (CO-RE, against the committed
//! per-arch vmlinux.h) and generates its Rust skeleton into OUT_DIR. The
//! `layouts` object is never loaded: its skeleton only carries the Rust
//! types of the structs BPF shares with user space (src/bpf/layouts.h).
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const OBJECTS: &[&str] = &[
    "layouts",
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
    for header in std::fs::read_dir("src/bpf")
        .expect("src/bpf exists")
        .flatten()
    {
        let path = header.path();
        if path.extension().is_some_and(|extension| extension == "h") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed={vmlinux_dir}/vmlinux.h");
    for object in OBJECTS {
        let source = format!("src/bpf/{object}.bpf.c");
        println!("cargo:rerun-if-changed={source}");
        SkeletonBuilder::new()
            .source(&source)
            .clang_args(["-I", &vmlinux_dir, "-I", "src/bpf", "-Wall", "-O2", "-g"])
            .build_and_generate(out_dir.join(format!("{object}.skel.rs")))
            .unwrap_or_else(|err| panic!("building {source}: {err:#}"));
    }
}
