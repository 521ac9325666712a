//! Link settings of the `event-collector` binary: its code laid out by use
//! (release builds; `link/symbol-order.txt`), and its relocations packed.
//!
//! On Linux with glibc 2.36 or newer, relative relocations are packed
//! (`DT_RELR`): the position-independent binary's 1.6 MB of `.rela.dyn`,
//! which the loader reads at every start and which then stay resident,
//! shrink to a few KiB. Older glibc cannot load such a binary, so the host's
//! glibc decides (when building for the host); `EC_PACK_RELOCS=0` or `=1`
//! overrides.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=EC_PACK_RELOCS");
    let pack = match std::env::var("EC_PACK_RELOCS").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => linux_gnu_host() && host_glibc().is_some_and(|v| v >= (2, 36)),
    };
    if pack {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The functions that run, laid out together (dev_setup/symbol-order.sh
    // writes the file from profiles of the release build): the code pages the
    // process maps are then code it runs. Names the build no longer has are
    // skipped by the linker, so a stale file costs memory, never correctness.
    // The option is lld's, rustc's default linker on x86_64 Linux since 1.90;
    // `EC_SYMBOL_ORDER=0` leaves it out (another linker).
    println!("cargo:rerun-if-env-changed=EC_SYMBOL_ORDER");
    let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    let lld = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
        && std::env::var("EC_SYMBOL_ORDER").as_deref() != Ok("0");
    if std::env::var("PROFILE").as_deref() == Ok("release") && linux_gnu_host() && lld && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether this build is for a Linux glibc target that is also the host.
fn linux_gnu_host() -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" && var("TARGET") == var("HOST")
}

/// The host's glibc version, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.split_whitespace().nth(1)?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
