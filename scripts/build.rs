//! Build script: in release builds linked by rust-lld, asks the linker to place
//! the functions listed in `scripts/hot-code.order` side by side, first, and to
//! pack the binary's relative relocations where the build host's glibc can load
//! them.
//!
//! Why: the kernel maps a binary's code 64 KiB at a time around each page first
//! touched, so the startup and call-serving code, scattered over 12 MiB of
//! `.text`, made 7 MiB of it resident at idle; gathered, idle RSS is 5 MiB lower
//! (BENCHMARKS.md, issue 17, third session). Layout only: the code is the same,
//! and names the linker does not find (after a toolchain update) are skipped.
//!
//! Applied only where it was tested: native x86_64 Linux with glibc, a compiler
//! whose default linker is rust-lld (Rust 1.90 and later), no linker chosen by
//! the user. `VOXRELAY_HOT_CODE=off` turns it off. [`skip_reason`] is pure and
//! tested in `tests/it/build_script.rs`.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER: &str = "scripts/hot-code.order";

/// What the decision depends on, read from Cargo's environment.
pub struct Build {
    pub target: String,
    pub host: String,
    /// `RUSTC_LINKER`: set when the user configured a linker.
    pub linker: String,
    /// `CARGO_ENCODED_RUSTFLAGS`.
    pub rustflags: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `VOXRELAY_HOT_CODE`.
    pub hot_code: String,
    pub order_exists: bool,
    /// `getconf GNU_LIBC_VERSION` on the build host, e.g. `glibc 2.36`.
    pub glibc: String,
    /// `VOXRELAY_PACK_RELOCS`.
    pub pack_relocs: String,
}

#[allow(dead_code)] // the tests include this file for the two decisions alone
fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=VOXRELAY_HOT_CODE");
    println!("cargo:rerun-if-env-changed=VOXRELAY_PACK_RELOCS");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("PROFILE") != "release" {
        return; // debug builds and tests keep the default layout
    }
    let rustc = match var("RUSTC") {
        rustc if rustc.is_empty() => "rustc".to_owned(),
        rustc => rustc,
    };
    let path = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER);
    let build = Build {
        target: var("TARGET"),
        host: var("HOST"),
        linker: var("RUSTC_LINKER"),
        rustflags: var("CARGO_ENCODED_RUSTFLAGS"),
        rustc: output_of(&rustc, "--version").unwrap_or_default(),
        hot_code: var("VOXRELAY_HOT_CODE"),
        order_exists: path.is_file(),
        glibc: output_of("getconf", "GNU_LIBC_VERSION").unwrap_or_default(),
        pack_relocs: var("VOXRELAY_PACK_RELOCS"),
    };
    match pack_relocs_skip_reason(&build) {
        Some(why) => println!("cargo:warning=relocations not packed: {why}"),
        None => println!("cargo:rustc-link-arg-bin=voxrelay=-Wl,-z,pack-relative-relocs"),
    }
    if let Some(why) = skip_reason(&build) {
        println!("cargo:warning=hot-code layout not applied: {why}");
        return;
    }
    let recorded = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("# rustc: ").map(str::to_owned))
        })
        .unwrap_or_default();
    if recorded != build.rustc {
        println!(
            "cargo:warning={ORDER} was made by {recorded:?}, this is {:?}: \
             most names will not match; rerun scripts/hot-code.sh",
            build.rustc
        );
    }
    println!(
        "cargo:rustc-link-arg-bin=voxrelay=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo:rustc-link-arg-bin=voxrelay=-Wl,--no-warn-symbol-ordering");
}

/// Why the layout is not applied to this release build, or `None` when it is.
pub fn skip_reason(build: &Build) -> Option<String> {
    if build.hot_code == "off" {
        return Some("VOXRELAY_HOT_CODE=off".into());
    }
    if let Some(why) = linker_skip_reason(build) {
        return Some(why);
    }
    if !build.order_exists {
        return Some(format!("{ORDER} is missing"));
    }
    None
}

/// Why this release build's relocations are not packed, or `None` when they are.
pub fn pack_relocs_skip_reason(build: &Build) -> Option<String> {
    if build.pack_relocs == "off" {
        return Some("VOXRELAY_PACK_RELOCS=off".into());
    }
    if let Some(why) = linker_skip_reason(build) {
        return Some(why);
    }
    let version = build.glibc.strip_prefix("glibc ").unwrap_or_default();
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    let (major, minor) = (parts.next().flatten(), parts.next().flatten());
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= (2, 36) => None,
        _ => {
            let glibc = &build.glibc;
            Some(format!(
                "the build host's C library is {glibc:?}; packed relocations need glibc 2.36"
            ))
        }
    }
}

/// Why the linker may not be the rust-lld these flags were tested with.
fn linker_skip_reason(build: &Build) -> Option<String> {
    if build.target != "x86_64-unknown-linux-gnu" || build.host != build.target {
        let target = &build.target;
        return Some(format!(
            "target {target}: only native x86_64 Linux is tested"
        ));
    }
    if !build.linker.is_empty() {
        return Some("a linker is configured".into());
    }
    if ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|flag| build.rustflags.contains(flag))
    {
        return Some("RUSTFLAGS choose the linker".into());
    }
    let minor = build
        .rustc
        .split_whitespace()
        .nth(1)
        .and_then(|version| version.split('.').nth(1))
        .and_then(|minor| minor.parse::<u32>().ok());
    if minor.is_none_or(|minor| minor < 90) {
        let rustc = &build.rustc;
        return Some(format!("{rustc:?} does not link with rust-lld by default"));
    }
    None
}

/// What `program arg` prints, trimmed: `rustc --version` of the compiler building
/// us, `getconf GNU_LIBC_VERSION` of the build host's C library.
#[allow(dead_code)]
fn output_of(program: &str, arg: &str) -> Option<String> {
    let out = Command::new(program).arg(arg).output().ok()?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}
