//! The guest kernel's build keeps every option of `kernel-config/skiff.config`: Kconfig drops
//! an option silently when a dependency is missing, so each one is checked in the final
//! `.config` the build script stores beside `vmlinux`.

use std::process::Command;

use skiff_tests::workspace;

#[test]
fn every_fragment_option_is_in_the_final_config() {
    let script = workspace().join("kernel-config/build.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "kernel-config/build.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let vmlinux = std::path::PathBuf::from(stdout.lines().last().unwrap().trim());
    let config = std::fs::read_to_string(vmlinux.with_file_name("config")).unwrap();
    let fragment = std::fs::read_to_string(workspace().join("kernel-config/skiff.config")).unwrap();
    let final_lines: std::collections::HashSet<&str> = config.lines().collect();
    let mut checked = 0;
    for line in fragment.lines().map(str::trim) {
        if let Some(opt) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            assert!(
                !config.lines().any(|l| l.starts_with(&format!("{opt}="))),
                "{opt} must stay unset"
            );
        } else if line.starts_with("CONFIG_") {
            assert!(
                final_lines.contains(line),
                "{line} is not in the final .config"
            );
        } else {
            continue;
        }
        checked += 1;
    }
    assert!(checked > 80, "only {checked} options checked");
}
