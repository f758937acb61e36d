//! Finds libkvblock and checks the hand-written struct layouts against the C compiler.
//!
//! Library, in order:
//!  1. `KVBLOCK_LIB_DIR`: a directory holding libkvblock.so (`make check-rust` sets it
//!     to the build directory). `KVBLOCK_STATIC=1` links libkvblock.a from there
//!     instead, plus its private dependencies (`KVBLOCK_STATIC_LIBS`, space separated
//!     `-l` names; default: what `pkg-config --static --libs kvblock` says, else
//!     `xxhash pthread m`).
//!  2. `pkg-config --libs kvblock` (the pkg-config binary, run with std::process; no
//!     crates: none is reachable offline).
//!
//! Layout check: the C compiler (`CC`, default `cc`) compiles a program that prints
//! sizeof/offsetof of every struct declared in src/lib.rs; the result becomes
//! `$OUT_DIR/c_layout.rs`, which tests/layout.rs compares with Rust's layout. Without a
//! C compiler or headers the table is empty and that test says it skipped.
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (struct, fields) checked by tests/layout.rs: keep in step with src/lib.rs.
const LAYOUT: &[(&str, &[&str])] = &[
    ("kvb_hash", &["hi", "lo"]),
    ("kvb_callbacks", &["user", "on_reset", "on_evict"]),
    ("kvb_allocator", &["ctx", "alloc", "free"]),
    (
        "kvb_pool_config",
        &[
            "block_count",
            "block_size",
            "dup_policy",
            "evict",
            "multi_lru_thresholds",
            "reset_on_release",
            "registry",
            "name",
            "callbacks",
            "evict_ops",
            "abort_on_misuse",
            "allocator",
            "events",
            "hint_capacity",
            "priorities",
            "clock",
        ],
    ),
    ("kvb_clock", &["ctx", "now_ms"]),
    ("kvb_mutable", &["pool", "id", "gen"]),
    ("kvb_complete", &["pool", "id", "gen", "hash"]),
    ("kvb_block", &["pool", "id", "gen", "hash"]),
    ("kvb_weak", &["pool", "id", "gen", "hash"]),
    ("kvb_block_addr", &["pool_id", "block_id", "hash"]),
    (
        "kvb_stats",
        &[
            "block_count",
            "reset",
            "mutable_",
            "staged",
            "primary",
            "duplicate",
            "inactive",
            "peak_in_use",
            "allocations",
            "allocations_from_reset",
            "evictions",
            "registrations",
            "duplicates",
            "dedups",
            "stagings",
            "match_requested",
            "match_returned",
            "misuse",
            "eager_transitions",
            "allocate_rollbacks",
            "release_noops",
            "lock_acquisitions",
            "lock_contended",
            "lock_wait_ns",
            "resurrections",
            "scan_requested",
            "scan_returned",
            "hint_uses",
            "hint_hashes",
            "hint_protected",
            "hint_added",
            "hint_withdrawn",
            "hint_unmatched",
            "hint_rejected",
            "hint_evictions",
            "retained",
            "retention_timers",
            "retention_expired",
            "retained_evictions",
        ],
    ),
    (
        "kvb_index_config",
        &[
            "block_size",
            "seed",
            "tier_weight",
            "stale_after_s",
            "drop_after_s",
            "max_streams",
            "max_entries_per_stream",
            "shards",
            "allocator",
        ],
    ),
    ("kvb_index_stream_config", &["name", "dp_rank", "hashes", "block_size"]),
    (
        "kvb_index_event",
        &[
            "type_",
            "tier",
            "n_hashes",
            "hashes",
            "has_parent",
            "parent",
            "tokens",
            "n_tokens",
            "block_size",
            "salt_key",
        ],
    ),
    (
        "kvb_index_result",
        &["stream", "dp_rank", "device", "host", "disk", "score", "entries", "state", "worker"],
    ),
    (
        "kvb_index_stats",
        &[
            "streams",
            "keys",
            "entries",
            "memory_bytes",
            "batches",
            "events",
            "block_ops",
            "matches",
            "matched_blocks",
        ],
    ),
];

fn pkg_config(args: &[&str]) -> Option<String> {
    let exe = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let out = Command::new(exe).args(args).arg("kvblock").output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn link_flags(flags: &str) {
    for tok in flags.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={}", dir);
        } else if let Some(lib) = tok.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={}", lib);
        }
    }
}

fn find_library() -> Option<String> {
    if let Ok(dir) = env::var("KVBLOCK_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", dir);
        if env::var("KVBLOCK_STATIC").map(|v| v == "1").unwrap_or(false) {
            println!("cargo:rustc-link-lib=static=kvblock");
            let deps = env::var("KVBLOCK_STATIC_LIBS").ok().unwrap_or_else(|| {
                pkg_config(&["--static", "--libs-only-l"])
                    .map(|s| s.replace("-lkvblock", "").replace("-l", ""))
                    .unwrap_or_else(|| "xxhash pthread m".to_string())
            });
            for lib in deps.split_whitespace() {
                println!("cargo:rustc-link-lib={}", lib.trim_start_matches("-l"));
            }
        } else {
            println!("cargo:rustc-link-lib=dylib=kvblock");
        }
        println!("cargo:lib_dir={}", dir);
        return Some(dir);
    }
    match pkg_config(&["--libs"]) {
        Some(flags) => {
            link_flags(&flags);
            pkg_config(&["--variable=libdir"])
        }
        None => panic!(
            "kvblock-sys: libkvblock not found: set KVBLOCK_LIB_DIR to the directory holding \
             libkvblock.so (e.g. the kvblock build directory), or install kvblock where \
             pkg-config finds it (PKG_CONFIG_PATH=<prefix>/lib/pkgconfig)"
        ),
    }
}

fn include_dir() -> Option<PathBuf> {
    if let Ok(d) = env::var("KVBLOCK_INCLUDE_DIR") {
        return Some(PathBuf::from(d));
    }
    // A source checkout: bindings/rust/kvblock-sys -> ../../../include
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let tree = manifest.join("../../../include");
    if tree.join("kvblock.h").exists() {
        return Some(tree);
    }
    let flags = pkg_config(&["--cflags-only-I"])?;
    flags
        .split_whitespace()
        .filter_map(|t| t.strip_prefix("-I"))
        .map(PathBuf::from)
        .find(|p| p.join("kvblock.h").exists())
        .or_else(|| Some(PathBuf::from("/usr/local/include")))
}

fn c_layout(out_dir: &Path) -> String {
    let inc = match include_dir() {
        Some(i) if i.join("kvblock.h").exists() => i,
        _ => return "None".to_string(),
    };
    let mut c = String::from(
        "#include <kvblock.h>\n#include <kvblock/index.h>\n#include <stdio.h>\n#include <stddef.h>\n\
         int main(void) {\n",
    );
    for (s, fields) in LAYOUT {
        c += &format!("printf(\"(\\\"{s}\\\", \\\"\\\", %zu),\\n\", sizeof({s}));\n");
        for f in fields.iter() {
            let cf = if *f == "type_" { "type" } else { f };
            c += &format!("printf(\"(\\\"{s}\\\", \\\"{f}\\\", %zu),\\n\", offsetof({s}, {cf}));\n");
        }
    }
    c += "return 0;\n}\n";
    let src = out_dir.join("c_layout.c");
    let exe = out_dir.join("c_layout");
    fs::write(&src, c).unwrap();
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let ok = Command::new(&cc)
        .arg("-std=c11")
        .arg("-I")
        .arg(&inc)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!("cargo:warning=kvblock-sys: {} could not build the layout probe; layout test skipped", cc);
        return "None".to_string();
    }
    match Command::new(&exe).output() {
        Ok(o) if o.status.success() => {
            format!("Some(&[\n{}])", String::from_utf8_lossy(&o.stdout))
        }
        _ => "None".to_string(),
    }
}

fn main() {
    for v in [
        "KVBLOCK_LIB_DIR",
        "KVBLOCK_STATIC",
        "KVBLOCK_STATIC_LIBS",
        "KVBLOCK_INCLUDE_DIR",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG",
        "CC",
    ] {
        println!("cargo:rerun-if-env-changed={}", v);
    }
    println!("cargo:rerun-if-changed=build.rs");
    find_library();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let table = c_layout(&out_dir);
    fs::write(
        out_dir.join("c_layout.rs"),
        format!(
            "/// (struct, field or \"\" for sizeof, bytes) as the C compiler lays them out.\n\
             pub const C_LAYOUT: Option<&[(&str, &str, usize)]> = {};\n",
            table
        ),
    )
    .unwrap();
}
