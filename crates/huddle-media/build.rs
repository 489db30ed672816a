//! Records whether openh264 gets its assembly: its build script uses `nasm` when it is on PATH
//! and OPENH264_NO_ASM is unset. The benchmark prints this so figures name the build they came from.
fn main() {
    println!("cargo:rerun-if-env-changed=OPENH264_NO_ASM");
    println!("cargo:rerun-if-env-changed=PATH");
    let nasm = std::env::var_os("OPENH264_NO_ASM").is_none()
        && std::process::Command::new("nasm")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
    let build = if nasm {
        "openh264 with nasm assembly"
    } else {
        "openh264 in plain C (no nasm)"
    };
    println!("cargo:rustc-env=HUDDLE_H264_BUILD={build}");
}
