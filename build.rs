//! Compiles every `src/bpf/<object>.bpf.c` with clang (CO-RE, against the
//! committed per-arch vmlinux.h) and generates its Rust skeleton into
//! OUT_DIR as `<object>.skel.rs`; a new tool's object needs no entry here.
//! The `layouts` object is never loaded: its skeleton only carries the Rust
//! types of the structs BPF shares with user space (src/bpf/layouts.h).
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("no committed vmlinux.h for target arch {other}"),
        Err(_) => "x86",
    };
    let vmlinux_dir = format!("src/bpf/vmlinux/{arch}");
    println!("cargo:rerun-if-changed=src/bpf");
    println!("cargo:rerun-if-changed={vmlinux_dir}/vmlinux.h");
    let mut sources: Vec<PathBuf> = std::fs::read_dir("src/bpf")
        .expect("src/bpf exists")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "h" || e == "c"))
        .collect();
    sources.sort();
    for path in &sources {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for source in sources {
        let name = source.file_name().unwrap_or_default().to_string_lossy();
        let Some(object) = name.strip_suffix(".bpf.c") else {
            continue;
        };
        SkeletonBuilder::new()
            .source(&source)
            .clang_args(["-I", &vmlinux_dir, "-I", "src/bpf", "-Wall", "-O2", "-g"])
            .build_and_generate(out_dir.join(format!("{object}.skel.rs")))
            .unwrap_or_else(|err| panic!("building {}: {err:#}", source.display()));
    }
}
