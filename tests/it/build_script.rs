//! The release build's link decisions (`scripts/build.rs`): the code layout and
//! packed relocations, applied only where they were tested, so that no user's
//! `cargo build --release` fails to link or makes a binary its host cannot start.

#[path = "../../scripts/build.rs"]
mod script;

use script::{Build, pack_relocs_skip_reason, skip_reason};

fn tested() -> Build {
    Build {
        target: "x86_64-unknown-linux-gnu".into(),
        host: "x86_64-unknown-linux-gnu".into(),
        linker: String::new(),
        rustflags: String::new(),
        rustc: "rustc 1.95.0 (59807616e 2026-04-14)".into(),
        hot_code: String::new(),
        order_exists: true,
        glibc: "glibc 2.36".into(),
        pack_relocs: String::new(),
    }
}

#[test]
fn applied_on_native_x86_64_linux_with_rust_lld() {
    assert_eq!(skip_reason(&tested()), None);
    let later = Build {
        rustc: "rustc 1.101.2 (abc 2027-09-01)".into(),
        ..tested()
    };
    assert_eq!(skip_reason(&later), None);
}

#[test]
fn skipped_where_the_linker_may_not_be_rust_lld() {
    let cases = [
        Build {
            rustc: "rustc 1.89.0 (29483883e 2025-08-04)".into(),
            ..tested()
        },
        Build {
            rustc: String::new(), // rustc --version failed
            ..tested()
        },
        Build {
            target: "aarch64-unknown-linux-gnu".into(),
            host: "aarch64-unknown-linux-gnu".into(),
            ..tested()
        },
        Build {
            target: "x86_64-unknown-linux-musl".into(),
            ..tested()
        },
        Build {
            host: "aarch64-apple-darwin".into(),
            ..tested()
        },
        Build {
            linker: "clang".into(),
            ..tested()
        },
        Build {
            rustflags: "-C\u{1f}link-arg=-fuse-ld=mold".into(),
            ..tested()
        },
        Build {
            rustflags: "-Clinker-features=-lld".into(),
            ..tested()
        },
    ];
    for build in cases {
        let why = skip_reason(&build);
        assert!(
            why.is_some(),
            "applied for {} / {}",
            build.target,
            build.rustc
        );
    }
}

#[test]
fn skipped_when_turned_off_or_the_list_is_missing() {
    let off = Build {
        hot_code: "off".into(),
        ..tested()
    };
    assert_eq!(skip_reason(&off).as_deref(), Some("VOXRELAY_HOT_CODE=off"));
    let missing = Build {
        order_exists: false,
        ..tested()
    };
    assert!(skip_reason(&missing).is_some_and(|why| why.contains("missing")));
}

#[test]
fn the_list_names_its_compiler_and_only_symbols() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/hot-code.order"
    ))
    .expect("scripts/hot-code.order");
    assert!(
        text.lines()
            .any(|line| line.starts_with("# rustc: rustc 1.")),
        "the build compares this line with its compiler"
    );
    let names: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(names.len() > 1000, "{} names", names.len());
    assert!(names.contains(&"main"));
    for name in names {
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "not a symbol: {name:?}"
        );
    }
}

#[test]
fn relocations_packed_only_where_the_build_host_can_load_them() {
    assert_eq!(pack_relocs_skip_reason(&tested()), None);
    for glibc in ["glibc 2.39", "glibc 3.0"] {
        let newer = Build {
            glibc: glibc.into(),
            ..tested()
        };
        assert_eq!(pack_relocs_skip_reason(&newer), None, "{glibc}");
    }
    // Older glibc, no glibc (musl, getconf missing), or an unreadable answer.
    for glibc in ["glibc 2.35", "glibc 2.9", "", "musl 1.2", "glibc two"] {
        let older = Build {
            glibc: glibc.into(),
            ..tested()
        };
        assert!(
            pack_relocs_skip_reason(&older).is_some_and(|why| why.contains("2.36")),
            "packed for {glibc:?}"
        );
    }
    let off = Build {
        pack_relocs: "off".into(),
        ..tested()
    };
    assert_eq!(
        pack_relocs_skip_reason(&off).as_deref(),
        Some("VOXRELAY_PACK_RELOCS=off")
    );
    // The same linker conditions as the layout, but not its list or its switch.
    let other_linker = Build {
        linker: "clang".into(),
        ..tested()
    };
    assert!(pack_relocs_skip_reason(&other_linker).is_some());
    let no_list = Build {
        order_exists: false,
        hot_code: "off".into(),
        ..tested()
    };
    assert_eq!(pack_relocs_skip_reason(&no_list), None);
}
