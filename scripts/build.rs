//! Build script: in release builds linked by rust-lld, asks the linker to place
//! the functions listed in `scripts/hot-code.order` side by side, first.
//!
//! Why: the kernel maps a binary's code 64 KiB at a time around each page first
//! touched, so the startup and call-serving code, scattered over 12 MiB of
//! `.text`, made 7 MiB of it resident at idle; gathered, it is about 3.5 MiB
//! (BENCHMARKS.md, issue 17, third session). Layout only: the code is the same, and
//! names the linker does not find (after a toolchain update) are skipped.
//!
//! Applied only where it was tested: native x86_64 Linux with glibc, a compiler
//! whose default linker is rust-lld (Rust 1.90 and later), no linker chosen by
//! the user. `VOXRELAY_HOT_CODE=off` turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER: &str = "scripts/hot-code.order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=VOXRELAY_HOT_CODE");
    if env::var("PROFILE").as_deref() != Ok("release") {
        return; // debug builds and tests keep the default layout
    }
    let path = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(ORDER);
    let rustc = rustc_version().unwrap_or_default();
    if let Some(why) = skip_reason(&path, &rustc) {
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
    if recorded != rustc {
        println!(
            "cargo:warning={ORDER} was made by {recorded:?}, this is {rustc:?}: \
             most names will not match; rerun scripts/hot-code.sh"
        );
    }
    println!(
        "cargo:rustc-link-arg-bin=voxrelay=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo:rustc-link-arg-bin=voxrelay=-Wl,--no-warn-symbol-ordering");
}

/// Why the layout is not applied to this build, or `None` when it is.
fn skip_reason(order: &Path, rustc: &str) -> Option<String> {
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("VOXRELAY_HOT_CODE") == "off" {
        return Some("VOXRELAY_HOT_CODE=off".into());
    }
    let target = var("TARGET");
    if target != "x86_64-unknown-linux-gnu" || var("HOST") != target {
        return Some(format!(
            "target {target}: only native x86_64 Linux is tested"
        ));
    }
    if !var("RUSTC_LINKER").is_empty() {
        return Some("a linker is configured".into());
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|flag| flags.contains(flag))
    {
        return Some("RUSTFLAGS choose the linker".into());
    }
    let minor = rustc
        .split_whitespace()
        .nth(1)
        .and_then(|version| version.split('.').nth(1))
        .and_then(|minor| minor.parse::<u32>().ok());
    if minor.is_none_or(|minor| minor < 90) {
        return Some(format!("{rustc:?} does not link with rust-lld by default"));
    }
    if !order.is_file() {
        return Some(format!("{} is missing", order.display()));
    }
    None
}

/// `rustc --version` of the compiler building us.
fn rustc_version() -> Option<String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}
