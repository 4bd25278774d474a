//! Generates bindings to the system DPDK at build time and compiles the C shim.
//!
//! Flags come from pkg-config `libdpdk` and are passed unchanged to both bindgen's clang and the
//! shim's C compiler (they carry `-include rte_config.h` and the `-march` DPDK was built with;
//! headers do not resolve without them). No library list is hard-coded: pkg-config emits the
//! link lines; `rte_net_ring` is added because `rte_eth_from_rings` lives in that PMD and
//! `--as-needed` would otherwise drop it.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/wrapper.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            panic!(
                "\n\nflowtwin-ffi: DPDK >= 22.11 not found through pkg-config ({e}).\n\
                 Install it with: scripts/setup   (or: apt-get install dpdk-dev libdpdk-dev pkg-config clang libclang-dev)\n\n"
            );
        }
    };
    println!("cargo:rustc-link-lib=rte_net_ring");

    // The exact cflags, as one list, for both clang (bindgen) and cc.
    let cflags = cflags_from_command();

    let mut build = cc::Build::new();
    build.file("csrc/shim.c").include("csrc").opt_level(3);
    for inc in &dpdk.include_paths {
        build.include(inc);
    }
    for f in &cflags {
        build.flag(f);
    }
    build.warnings(true).compile("flowtwin_shim");

    let bindings = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-Icsrc")
        .allowlist_function("rte_.*|ft_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|FT_.*")
        // Packed structs that contain aligned members (E0588) or lack Debug: treat as opaque
        // and parse these headers ourselves (DPDK-NOTES).
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .expect("bindgen failed to generate DPDK bindings (are clang and libclang-dev installed?)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("write bindings");
}

/// `pkg-config --cflags libdpdk`, split into arguments.
fn cflags_from_command() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config --cflags libdpdk");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
