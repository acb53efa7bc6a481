//! Tells the crate the optimization level it is compiled at, so `fit` can warn
//! once when a large training run uses an unoptimized (debug) build of horn.
fn main() {
    let level = std::env::var("OPT_LEVEL").unwrap_or_default();
    println!("cargo:rustc-env=HORN_OPT_LEVEL={level}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OPT_LEVEL");
}
