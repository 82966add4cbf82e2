//! Containers on the network, on the engine of `$SKIFF_TEST_ENGINE` (qemu by default; kvm inside
//! the nested test VM): outbound TCP and UDP to the host's loopback through
//! `host.docker.internal`, DNS answered through the host's resolver configuration, `--network
//! none`, published TCP and UDP ports, and bad input. Every byte of test traffic goes to
//! 127.0.0.1 of the machine the tests run on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::{
    assert_code, assert_skiff_error, busybox, free_port, images, processes_mentioning,
    run_with_deadline, sha256_hex, stdout, Root,
};

const DEADLINE: Duration = Duration::from_secs(240);

fn debian() -> String {
    format!("oci:{}/oci/debian", images().display())
}

fn run(root: &Root, args: &[&str]) -> Output {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(args);
    run_with_deadline(root.cmd(&a), b"", DEADLINE).expect("skiff run")
}

/// A helper process killed when the test ends, however it ends.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`; returns it and its port.
fn http_server(dir: &std::path::Path) -> (Helper, u16) {
    let mut child = Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port = line
        .split(" port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Helper(child), port)
}

#[test]
fn container_fetches_32_mib_from_the_host_through_host_docker_internal() {
    let root = Root::new();
    let data: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.0.path().join("big"), &data).unwrap();
    let (_server, port) = http_server(root.0.path());
    let url = format!("http://host.docker.internal:{port}/big");
    let o = run(
        &root,
        &[
            &busybox(),
            "sh",
            "-c",
            &format!("wget -q -O- {url} | sha256sum"),
        ],
    );
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o).split_whitespace().next(),
        Some(&*sha256_hex(&data))
    );
}

#[test]
fn udp_round_trip_to_a_host_echo() {
    let root = Root::new();
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = echo.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, peer);
        }
    });
    // bash's /dev/udp: a connected UDP socket; one dd block is one whole datagram.
    let script = format!(
        "exec 3<>/dev/udp/host.docker.internal/{port}; echo ping-$((6*7)) >&3; echo \"[$(timeout 20 dd bs=2048 count=1 <&3 2>/dev/null)]\""
    );
    let o = run(&root, &[&debian(), "bash", "-c", &script]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "[echo:ping-42]\n");
}

#[test]
fn dns_answers_come_from_the_hosts_resolver_configuration() {
    let root = Root::new();
    // A DNS server on the host's 127.0.0.1 that knows one test name, and a resolver
    // configuration naming it, seen only by the skiff run in a private mount namespace.
    let dnsmasq = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--port=53",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--address=/skiff-dns.test.example/10.1.2.3",
            "--pid-file",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsmasq (Debian package dnsmasq-base)");
    let mut dnsmasq = Helper(dnsmasq);
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = dnsmasq.0.try_wait() {
        let mut err = String::new();
        let _ = dnsmasq.0.stderr.take().unwrap().read_to_string(&mut err);
        panic!("dnsmasq ended ({status}): {err}");
    }
    let resolv = root.0.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\nsearch test.example\n").unwrap();
    let mut cmd = Command::new("unshare");
    cmd.arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec \"$@\"",
            resolv.display()
        ))
        .arg("sh")
        .arg(skiff_tests::skiff_bin())
        .args(["run", "--rm", &busybox(), "sh", "-c"])
        .arg("cat /etc/resolv.conf; nslookup -type=a skiff-dns.test.example; nslookup -type=a skiff-dns")
        .env("SKIFF_ROOT", root.0.path())
        .env("SKIFF_ENGINE", skiff_tests::test_engine());
    let o = run_with_deadline(cmd, b"", DEADLINE).expect("skiff run");
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("nameserver 10.0.2.3\nsearch test.example\n"),
        "{out}"
    );
    // Both lookups (the full name, and the short one through the host's search list).
    assert_eq!(out.matches("Address: 10.1.2.3").count(), 2, "{out}");
}

#[test]
fn network_none_has_only_lo_and_default_has_eth0() {
    let root = Root::new();
    let show = "ip -o link | cut -d: -f2; cat /etc/hosts; test -e /etc/resolv.conf && echo has-resolv; true";
    let o = run(
        &root,
        &[
            "--network",
            "none",
            "--hostname",
            "quiet",
            &busybox(),
            "sh",
            "-c",
            show,
        ],
    );
    assert_code(&o, 0);
    let out = stdout(&o);
    let links: Vec<&str> = out.lines().take_while(|l| l.starts_with(' ')).collect();
    assert_eq!(links, [" lo"], "{out}");
    assert!(
        out.contains("127.0.0.1\tlocalhost") && out.contains("\tquiet"),
        "{out}"
    );
    assert!(!out.contains("host.docker.internal"), "{out}");

    let o = run(
        &root,
        &[
            "--hostname",
            "web",
            "--add-host",
            "db.internal:10.9.8.7",
            &busybox(),
            "sh",
            "-c",
            "ip -o -4 addr show eth0; ip route; cat /sys/class/net/eth0/mtu; cat /etc/hosts /etc/hostname; hostname",
        ],
    );
    assert_code(&o, 0);
    let out = stdout(&o);
    for want in [
        "inet 10.0.2.15/24",
        "default via 10.0.2.2 dev eth0",
        "\n65520\n",
        "10.0.2.15\tweb\n",
        "10.0.2.2\thost.docker.internal host.containers.internal\n",
        "10.9.8.7\tdb.internal\n",
        "\nweb\nweb\n",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
}

/// GETs `path` from 127.0.0.1:`port` until the container answers; the first connections may
/// come before it listens, and must then be closed cleanly.
fn http_get_when_up(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut reply = String::new();
            if s.read_to_string(&mut reply).is_ok() && reply.starts_with("HTTP/1.") {
                return reply;
            }
        }
        assert!(Instant::now() < deadline, "port {port} never served {path}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Addresses the host listens on for TCP port `port` (from /proc/net/tcp: state 0A = LISTEN).
fn tcp_listeners(port: u16) -> Vec<String> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, p) = f.get(1)?.split_once(':')?;
            (f.get(3) == Some(&"0A") && u16::from_str_radix(p, 16).ok()? == port).then(|| {
                let a = u32::from_str_radix(addr, 16).unwrap_or(0).to_le_bytes();
                format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
            })
        })
        .collect()
}

#[test]
fn published_tcp_ports_serve_the_host_on_loopback_only() {
    let root = Root::new();
    let (explicit, implicit) = (free_port(), free_port());
    let serve =
        "mkdir -p /www && echo served-from-the-container > /www/f && exec httpd -f -p 80 -h /www";
    let id = root.detach(
        &[
            "-p",
            &format!("127.0.0.1:{explicit}:80"),
            "-p",
            &format!("{implicit}:80"),
        ],
        &["sh", "-c", serve],
    );
    for port in [explicit, implicit] {
        let reply = http_get_when_up(port, "/f");
        assert!(
            reply.ends_with("\r\n\r\nserved-from-the-container\n"),
            "{reply}"
        );
        assert_eq!(tcp_listeners(port), ["127.0.0.1"], "port {port}");
    }
    let o = root.skiff(&["port", &id]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("80/tcp -> 127.0.0.1:{explicit}\n80/tcp -> 127.0.0.1:{implicit}\n")
    );
    let o = root.skiff(&["port", &id, "80/tcp"]);
    assert_eq!(
        stdout(&o),
        format!("127.0.0.1:{explicit}\n127.0.0.1:{implicit}\n")
    );
    let ps = stdout(&root.skiff(&["ps"]));
    assert!(
        ps.contains(&format!("127.0.0.1:{explicit}->80/tcp")),
        "{ps}"
    );
    let inspect = stdout(&root.skiff(&["inspect", &id]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        v[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        explicit.to_string()
    );
    assert_eq!(v[0]["NetworkSettings"]["IPAddress"], "10.0.2.15");
    // Many connections at once through the one relay.
    let handles: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || http_get_when_up(explicit, "/f")))
        .collect();
    for h in handles {
        assert!(h.join().unwrap().ends_with("served-from-the-container\n"));
    }
    assert_code(&root.skiff(&["rm", "-f", &id]), 0);
    assert!(
        tcp_listeners(explicit).is_empty(),
        "still listening after rm"
    );
}

#[test]
fn published_udp_port_echoes() {
    let root = Root::new();
    let port = free_port();
    let echo = r#"$s=IO::Socket::INET->new(LocalPort=>81,Proto=>"udp") or die "udp: $!"; print "up\n"; while($s->recv($m,65535)){ $s->send("echo:$m") }"#;
    let mut args = vec!["run", "-d", "-p"];
    let publish = format!("{port}:81/udp");
    args.push(&publish);
    let img = debian();
    args.extend([img.as_str(), "perl", "-MIO::Socket::INET", "-e", echo]);
    let o = run_with_deadline(root.cmd(&args), b"", DEADLINE).unwrap();
    assert_code(&o, 0);
    let id = stdout(&o).trim().to_string();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 100];
    // Datagrams sent before the container's socket exists are lost, as UDP allows.
    let n = loop {
        sock.send_to(b"ping-udp", ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            break n;
        }
        assert!(Instant::now() < deadline, "no UDP answer");
    };
    assert_eq!(&buf[..n], b"echo:ping-udp");
    assert_eq!(
        stdout(&root.skiff(&["port", &id])),
        format!("81/udp -> 127.0.0.1:{port}\n")
    );
    assert_code(&root.skiff(&["rm", "-f", &id]), 0);
}

#[test]
fn bad_network_input_is_a_one_line_error_and_leaves_nothing() {
    let root = Root::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let in_use = format!("{taken_port}:80");
    for (args, what) in [
        (vec!["-p", in_use.as_str()], "is already in use"),
        (vec!["-p", "80"], "a host and a container port are needed"),
        (vec!["-p", "a:b"], "is not a port number"),
        (vec!["-p", "0:80"], "out of range"),
        (vec!["-p", "8080:70000"], "out of range"),
        (vec!["-d", "-p", in_use.as_str()], "is already in use"),
    ] {
        let mut a = args.clone();
        let img = busybox();
        a.extend([img.as_str(), "true"]);
        let o = run(&root, &a);
        assert_skiff_error(&o, what);
    }
    let o = run(&root, &["--network", "bogus", &busybox(), "true"]);
    assert_skiff_error(&o, "unknown network \"bogus\"");
    // Without passt: one line naming the fix; --network none does not need it.
    let mut cmd = root.cmd(&["run", "--rm", &busybox(), "true"]);
    cmd.env("SKIFF_PASST", "/nonexistent/passt");
    let o = run_with_deadline(cmd, b"", DEADLINE).unwrap();
    assert_skiff_error(&o, "apt-get install passt");
    let mut cmd = root.cmd(&["run", "--rm", "--network", "none", &busybox(), "echo", "ok"]);
    cmd.env("SKIFF_PASST", "/nonexistent/passt");
    let o = run_with_deadline(cmd, b"", DEADLINE).unwrap();
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "ok\n");
    assert_eq!(
        stdout(&root.skiff(&["ps", "-a", "-q"])),
        "",
        "containers were left"
    );
    assert!(processes_mentioning(&root.0.path().display().to_string()).is_empty());
}

/// The passt serving the VM of skiff process `skiff`.
fn passt_of(skiff: u32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == skiff && comm.contains("(passt")).then_some(pid)
    })
}

#[test]
fn passt_dying_mid_run_is_reported_and_nothing_hangs() {
    let root = Root::new();
    let (_server, port) = http_server(root.0.path());
    std::fs::write(root.0.path().join("f"), "x").unwrap();
    let script = format!(
        "wget -q -O /dev/null http://host.docker.internal:{port}/f && echo first-ok; \
         while [ ! -e /tmp/go ]; do sleep 0.2; done; \
         timeout 5 wget -q -O /dev/null http://host.docker.internal:{port}/f || echo network-gone"
    );
    let mut cmd = root.cmd(&["run", "--name", "netcut", &busybox(), "sh", "-c", &script]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first-ok\n");
    let passt = passt_of(child.id()).expect("no passt child of skiff");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(passt),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_code(&root.skiff(&["exec", "netcut", "touch", "/tmp/go"]), 0);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(rest, "network-gone\n");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("lost its network: passt ended"), "{err}");
    assert_code(&root.skiff(&["rm", "netcut"]), 0);
}

/// CPU time (user + system) of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks / hz as f64
}

/// Copies `bytes` from `from` to `to` in 256 KiB pieces; returns the seconds it took.
fn pump(mut from: impl Read, mut to: impl Write, bytes: u64) -> f64 {
    let t = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let mut left = bytes;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = from.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "the stream ended {left} bytes early");
        to.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    t.elapsed().as_secs_f64()
}

/// The `-p` relay's figures (scripts/bench.sh): the first byte of a published port after
/// `run -d` returns, and 1 GiB each way through the relay against the host's loopback alone.
#[test]
#[ignore = "benchmark: scripts/bench.sh runs it"]
fn bench_published_port() {
    const GIB: u64 = 1 << 30;
    let root = Root::new();
    let (up, down, first) = (free_port(), free_port(), free_port());
    let t = Instant::now();
    let id = root.detach(
        &[
            "-p",
            &format!("{up}:81"),
            "-p",
            &format!("{down}:82"),
            "-p",
            &format!("{first}:80"),
        ],
        &[
            "sh",
            "-c",
            "mkdir /w; echo hi > /w/f; httpd -p 80 -h /w; nc -l -p 82 -e cat /dev/zero & \
             nc -l -p 81 -e sh -c 'exec cat > /dev/null' & exec sleep 100000",
        ],
    );
    let returned = t.elapsed();
    let t = Instant::now();
    http_get_when_up(first, "/f");
    let first_byte = t.elapsed();
    let monitor = root.state(&id)["monitor_pid"].as_u64().unwrap() as u32;

    let cpu0 = cpu_seconds(monitor);
    let to_container = {
        let s = loop {
            let s = TcpStream::connect(("127.0.0.1", up)).unwrap();
            // A connection the container does not take yet is closed at once: wait for one.
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut b = [0u8; 1];
            match (&s).read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break s,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        pump(std::io::repeat(0), s, GIB)
    };
    let from_container = pump(
        TcpStream::connect(("127.0.0.1", down)).unwrap(),
        std::io::sink(),
        GIB,
    );
    let relay_cpu = cpu_seconds(monitor) - cpu0;

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        pump(c, std::io::sink(), GIB)
    });
    let direct = pump(std::io::repeat(0), TcpStream::connect(addr).unwrap(), GIB);
    let _ = sink.join();
    assert_code(&root.skiff(&["rm", "-f", &id]), 0);
    let mib_s = |secs: f64| 1024.0 / secs;
    println!(
        "published port: first byte {:.0} ms after run -d returned (run -d itself {:.0} ms)",
        first_byte.as_secs_f64() * 1e3,
        returned.as_secs_f64() * 1e3
    );
    println!(
        "1 GiB host→container {:.0} MiB/s, container→host {:.0} MiB/s, host loopback alone {:.0} MiB/s: ratios {:.3} / {:.3}",
        mib_s(to_container),
        mib_s(from_container),
        mib_s(direct),
        direct / to_container,
        direct / from_container
    );
    println!(
        "host-side CPU of the container's monitor (relay + vsock device{}) per GiB: {:.2} s",
        if skiff_tests::test_engine() == "kvm" {
            " + VMM"
        } else {
            ""
        },
        relay_cpu / 2.0
    );
}

#[test]
fn publish_all_publishes_the_images_exposed_ports() {
    let root = Root::new();
    // The busybox layout, with `EXPOSE 80/tcp` added by umoci.
    let layout = root.0.path().join("exposed");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(images().join("oci/busybox"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(copied.success());
    let umoci = Command::new("umoci")
        .args(["config", "--config.exposedports", "80/tcp", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .output()
        .expect("umoci");
    assert!(
        umoci.status.success(),
        "{}",
        String::from_utf8_lossy(&umoci.stderr)
    );
    let image = format!("oci:{}:latest", layout.display());
    let serve = "mkdir -p /www && echo exposed > /www/f && exec httpd -f -p 80 -h /www";
    let o = run_with_deadline(
        root.cmd(&["run", "-d", "-P", &image, "sh", "-c", serve]),
        b"",
        DEADLINE,
    )
    .unwrap();
    assert_code(&o, 0);
    let id = stdout(&o).trim().to_string();
    let ports = stdout(&root.skiff(&["port", &id, "80"]));
    let addr = ports.trim();
    let port: u16 = addr
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no 127.0.0.1 port for 80/tcp: {ports:?}"));
    assert!(http_get_when_up(port, "/f").ends_with("\r\n\r\nexposed\n"));
    assert_code(&root.skiff(&["rm", "-f", &id]), 0);
}

#[test]
fn passt_goes_with_a_killed_skiff_and_exec_shares_the_network() {
    let root = Root::new();
    let (_server, port) = http_server(root.0.path());
    std::fs::write(root.0.path().join("f"), "from-the-host").unwrap();
    let mut cmd = root.cmd(&[
        "run",
        "--name",
        "doomed",
        &busybox(),
        "sh",
        "-c",
        "echo up; sleep 1000",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n");
    // An exec'd process is in the container's network: it reaches the host too.
    let url = format!("http://host.docker.internal:{port}/f");
    let o = root.skiff(&["exec", "doomed", "wget", "-q", "-O-", &url]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "from-the-host");
    let passt = passt_of(child.id()).expect("no passt child of skiff");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{passt}")).exists() {
        let zombie = std::fs::read_to_string(format!("/proc/{passt}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if zombie {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "passt {passt} outlived the skiff killed with SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
