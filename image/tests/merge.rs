//! docker's override rules: entrypoint/command, environment, working directory and user.

use std::path::PathBuf;

use skiff_image::{merge_with, ImageConfig, Process, RunConfigError, RunOverrides, DEFAULT_PATH};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
    ImageConfig {
        entrypoint: strings(entrypoint),
        cmd: strings(cmd),
        ..ImageConfig::default()
    }
}

fn host(key: &str) -> Option<String> {
    match key {
        "HOST_VAR" => Some("from host".into()),
        "PATH" => Some("/host/bin".into()),
        _ => None,
    }
}

fn run(config: &ImageConfig, o: &RunOverrides) -> Result<Process, RunConfigError> {
    merge_with(config, o, &host)
}

#[test]
fn entrypoint_and_command() {
    struct Case {
        name: &'static str,
        image: (&'static [&'static str], &'static [&'static str]),
        entrypoint: Option<&'static str>,
        command: &'static [&'static str],
        argv: Option<&'static [&'static str]>,
    }
    #[rustfmt::skip]
    let cases = [
        Case { name: "image cmd", image: (&[], &["/bin/sh"]), entrypoint: None, command: &[], argv: Some(&["/bin/sh"]) },
        Case { name: "command replaces cmd", image: (&[], &["/bin/sh"]), entrypoint: None, command: &["ls", "-l"], argv: Some(&["ls", "-l"]) },
        Case { name: "entrypoint + cmd", image: (&["/bin/echo", "e"], &["c"]), entrypoint: None, command: &[], argv: Some(&["/bin/echo", "e", "c"]) },
        Case { name: "command replaces cmd after the entrypoint", image: (&["/bin/echo", "e"], &["c"]), entrypoint: None, command: &["x", "y"], argv: Some(&["/bin/echo", "e", "x", "y"]) },
        Case { name: "--entrypoint drops the image cmd", image: (&["/bin/echo"], &["c"]), entrypoint: Some("/bin/ls"), command: &[], argv: Some(&["/bin/ls"]) },
        Case { name: "--entrypoint with a command", image: (&["/bin/echo"], &["c"]), entrypoint: Some("/bin/ls"), command: &["-a"], argv: Some(&["/bin/ls", "-a"]) },
        Case { name: "--entrypoint is one word", image: (&[], &[]), entrypoint: Some("/bin/a b"), command: &[], argv: Some(&["/bin/a b"]) },
        Case { name: "--entrypoint '' clears entrypoint and cmd", image: (&["/bin/echo"], &["c"]), entrypoint: Some(""), command: &[], argv: None },
        Case { name: "--entrypoint '' with a command", image: (&["/bin/echo"], &["c"]), entrypoint: Some(""), command: &["sh"], argv: Some(&["sh"]) },
        Case { name: "nothing at all", image: (&[], &[]), entrypoint: None, command: &[], argv: None },
        Case { name: "entrypoint only", image: (&["/e"], &[]), entrypoint: None, command: &[], argv: Some(&["/e"]) },
        Case { name: "empty program name", image: (&[], &[""]), entrypoint: None, command: &[], argv: None },
    ];
    for c in cases {
        let o = RunOverrides {
            entrypoint: c.entrypoint.map(str::to_owned),
            command: strings(c.command),
            ..RunOverrides::default()
        };
        let got = run(&image(c.image.0, c.image.1), &o);
        match c.argv {
            Some(argv) => assert_eq!(got.unwrap().argv, strings(argv), "{}", c.name),
            None => {
                let err = got.unwrap_err();
                assert!(
                    matches!(err, RunConfigError::NoCommand),
                    "{}: {err}",
                    c.name
                );
                assert!(err.to_string().starts_with("no command specified"), "{err}");
            }
        }
    }
}

#[test]
fn environment() {
    let dir = tempfile::tempdir().unwrap();
    let file1 = dir.path().join("one.env");
    let file2 = dir.path().join("two.env");
    std::fs::write(
        &file1,
        "# settings\nFILE=1\nSHARED=file1\nHOST_VAR\nNOT_ON_HOST\n",
    )
    .unwrap();
    std::fs::write(&file2, "SHARED=file2\nIMG=from file\n").unwrap();
    let config = ImageConfig {
        cmd: strings(&["sh"]),
        env: strings(&[
            "PATH=/img/bin",
            "IMG=image",
            "GONE=image",
            "KEEP=image",
            "BROKEN",
            "=x",
        ]),
        ..ImageConfig::default()
    };
    struct Case {
        name: &'static str,
        files: Vec<PathBuf>,
        flags: &'static [&'static str],
        hostname: &'static str,
        tty: bool,
        env: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "image env over the defaults",
            files: vec![],
            flags: &[],
            hostname: "c0ffee",
            tty: false,
            env: &[
                "PATH=/img/bin",
                "HOSTNAME=c0ffee",
                "IMG=image",
                "GONE=image",
                "KEEP=image",
            ],
        },
        Case {
            name: "files then flags, later wins in place",
            files: vec![file1.clone(), file2.clone()],
            flags: &["SHARED=flag", "NEW=a=b", "IMG="],
            hostname: "h",
            tty: true,
            env: &[
                "PATH=/img/bin",
                "HOSTNAME=h",
                "TERM=xterm",
                "IMG=",
                "GONE=image",
                "KEEP=image",
                "FILE=1",
                "SHARED=flag",
                "HOST_VAR=from host",
                "NEW=a=b",
            ],
        },
        Case {
            name: "-e KEY takes the host value, or unsets KEY",
            files: vec![],
            flags: &["HOST_VAR", "GONE", "PATH", "HOSTNAME=mine"],
            hostname: "",
            tty: false,
            env: &[
                "PATH=/host/bin",
                "IMG=image",
                "KEEP=image",
                "HOST_VAR=from host",
                "HOSTNAME=mine",
            ],
        },
    ];
    for c in cases {
        let o = RunOverrides {
            env: strings(c.flags),
            env_files: c.files,
            hostname: c.hostname.into(),
            tty: c.tty,
            ..RunOverrides::default()
        };
        assert_eq!(run(&config, &o).unwrap().env, strings(c.env), "{}", c.name);
    }
}

#[test]
fn path_defaults_like_docker() {
    let o = RunOverrides::default();
    assert_eq!(
        run(&image(&[], &["sh"]), &o).unwrap().env,
        [format!("PATH={DEFAULT_PATH}")]
    );
}

#[test]
fn environment_errors() {
    let config = image(&[], &["sh"]);
    let bad_flag = RunOverrides {
        env: strings(&["=oops"]),
        ..RunOverrides::default()
    };
    let err = run(&config, &bad_flag).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid environment variable \"=oops\": the name is empty"
    );

    let missing = RunOverrides {
        env_files: vec!["/nonexistent/skiff.env".into()],
        ..RunOverrides::default()
    };
    let err = run(&config, &missing).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read env file /nonexistent/skiff.env"),
        "{err}"
    );
}

#[test]
fn working_directory_and_user() {
    struct Case {
        image_dir: &'static str,
        image_user: &'static str,
        workdir: Option<&'static str>,
        user: Option<&'static str>,
        want: Result<(&'static str, &'static str), &'static str>,
    }
    #[rustfmt::skip]
    let cases = [
        Case { image_dir: "", image_user: "", workdir: None, user: None, want: Ok(("/", "")) },
        Case { image_dir: "/tmp", image_user: "app", workdir: None, user: None, want: Ok(("/tmp", "app")) },
        Case { image_dir: "/tmp", image_user: "app", workdir: Some("/srv"), user: Some("0:0"), want: Ok(("/srv", "0:0")) },
        Case { image_dir: "/tmp", image_user: "app", workdir: Some(""), user: Some(""), want: Ok(("/tmp", "app")) },
        Case { image_dir: "", image_user: "", workdir: Some("rel"), user: None, want: Err("the working directory \"rel\" is invalid: it needs to be an absolute path") },
        Case { image_dir: "rel", image_user: "", workdir: None, user: None, want: Err("the image's WorkingDir \"rel\" is not an absolute path; pass -w with an absolute path") },
        Case { image_dir: "rel", image_user: "", workdir: Some("/ok"), user: None, want: Ok(("/ok", "")) },
    ];
    for c in cases {
        let config = ImageConfig {
            cmd: strings(&["sh"]),
            working_dir: c.image_dir.into(),
            user: c.image_user.into(),
            ..ImageConfig::default()
        };
        let o = RunOverrides {
            workdir: c.workdir.map(str::to_owned),
            user: c.user.map(str::to_owned),
            ..RunOverrides::default()
        };
        let got = run(&config, &o)
            .map(|p| (p.cwd, p.user))
            .map_err(|e| e.to_string());
        let want = c
            .want
            .map(|(d, u)| (d.to_owned(), u.to_owned()))
            .map_err(str::to_owned);
        assert_eq!(
            got, want,
            "image {:?}/{:?} flags {:?}/{:?}",
            c.image_dir, c.image_user, c.workdir, c.user
        );
    }
}
