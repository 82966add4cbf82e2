//! The kernel builds keep every option of their fragments: Kconfig drops an option silently
//! when a dependency is missing, so each one is checked in the final `.config` the build script
//! stores beside `vmlinux`. Both kernels: the guest's (`skiff.config`) and the nested test VM's
//! L1 kernel (`skiff.config` then `l1.config`).

use std::process::Command;

use skiff_tests::workspace;

/// Builds (or finds cached) the kernel of `build.sh ARGS` and checks that every line of
/// `fragments` survives; returns how many options were checked.
fn check(args: &[&str], fragments: &[&str]) -> usize {
    let script = workspace().join("kernel-config/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kernel-config/build.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let vmlinux = std::path::PathBuf::from(stdout.lines().last().unwrap().trim());
    let config = std::fs::read_to_string(vmlinux.with_file_name("config")).unwrap();
    let final_lines: std::collections::HashSet<&str> = config.lines().collect();
    let mut checked = 0;
    for name in fragments {
        let fragment =
            std::fs::read_to_string(workspace().join("kernel-config").join(name)).unwrap();
        for line in fragment.lines().map(str::trim) {
            if let Some(opt) = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
            {
                assert!(
                    !config.lines().any(|l| l.starts_with(&format!("{opt}="))),
                    "{opt} must stay unset ({name})"
                );
            } else if line.starts_with("CONFIG_") {
                assert!(
                    final_lines.contains(line),
                    "{line} ({name}) is not in the final .config of {}",
                    vmlinux.display()
                );
            } else {
                continue;
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_fragment_option_is_in_the_guest_kernel_config() {
    let checked = check(&[], &["skiff.config"]);
    assert!(checked > 80, "only {checked} options checked");
}

#[test]
fn every_fragment_option_is_in_the_l1_kernel_config() {
    let checked = check(&["--l1"], &["skiff.config", "l1.config"]);
    assert!(checked > 90, "only {checked} options checked");
}
