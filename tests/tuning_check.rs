//! `tuning/check.sh`, the read-only host check: it reads /proc and /sys (through a fake tree
//! the test lays out, via REEL_CHECK_ROOT), names what to change and exits 1 when something
//! needs changing.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/check.sh");

struct Host {
    io_uring_disabled: &'static str,
    rmem_max: &'static str,
    backlog: &'static str,
    port_range: &'static str,
    reserved: &'static str,
}

/// What tuning/99-reel.conf sets.
const TUNED: Host = Host {
    io_uring_disabled: "0",
    rmem_max: "33554432",
    backlog: "250000",
    port_range: "32768\t60999",
    reserved: "16384-32767",
};

/// A host as installed: io_uring off, kernel defaults, an ephemeral range over the RTP ports.
const UNTUNED: Host = Host {
    io_uring_disabled: "2",
    rmem_max: "212992",
    backlog: "1000",
    port_range: "10000\t60999",
    reserved: "",
};

fn lay_out(root: &Path, h: &Host) {
    let files = [
        ("proc/sys/kernel/io_uring_disabled", h.io_uring_disabled),
        ("proc/sys/net/core/rmem_max", h.rmem_max),
        ("proc/sys/net/core/netdev_max_backlog", h.backlog),
        ("proc/sys/net/ipv4/ip_local_port_range", h.port_range),
        ("proc/sys/net/ipv4/ip_local_reserved_ports", h.reserved),
        ("proc/self/status", "Name:\tsh\nSeccomp:\t0\n"),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&p, format!("{text}\n")).expect("write");
    }
}

/// A fake host tree laid out as `h`, with `config` written to `reel.toml` in it.
fn host_with_config(h: &Host, config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    lay_out(dir.path(), h);
    let cfg = dir.path().join("reel.toml");
    std::fs::write(&cfg, config).expect("write config");
    (dir, cfg)
}

fn run(root: &Path, args: &[&str]) -> Output {
    run_with_env(root, args, &[])
}

fn run_with_env(root: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new("sh")
        .arg(SCRIPT)
        .args(args)
        .env("REEL_CHECK_ROOT", root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run tuning/check.sh")
}

/// The text of the line for one check, empty when there is none.
fn line_of(out: &Output, check: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_default()
        .to_string()
}

/// The verdict ("ok", "change", "info") of the line for one check.
fn verdict(out: &Output, check: &str) -> String {
    match line_of(out, check).split_whitespace().next() {
        Some(v) => v.to_string(),
        None => panic!(
            "no line for {check}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

#[test]
fn a_tuned_host_passes_the_kernel_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    lay_out(dir.path(), &TUNED);
    let out = run(dir.path(), &[]);
    for check in ["io_uring", "rmem_max", "netdev_backlog", "rtp_ports"] {
        assert_eq!(
            verdict(&out, check),
            "ok",
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn an_untuned_host_is_told_what_to_change_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    lay_out(dir.path(), &UNTUNED);
    let out = run(dir.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for check in ["io_uring", "rmem_max", "netdev_backlog", "rtp_ports"] {
        assert_eq!(verdict(&out, check), "change", "{text}");
    }
    // Each change names the setting and the value to use.
    assert!(text.contains("net.core.rmem_max = 33554432"), "{text}");
    assert!(
        text.contains("ip_local_reserved_ports = 16384-32767"),
        "{text}"
    );
    assert!(text.contains("epoll"), "{text}");
}

#[test]
fn the_config_file_sets_what_is_checked() {
    let (dir, cfg) = host_with_config(
        &TUNED,
        "[media]\nrcvbuf = 67108864 # 64 MiB\nrtp_ports = \"40000-40999\"\ncpus = [0, 4096]\n",
    );
    let out = run(dir.path(), &["--config", cfg.to_str().expect("utf-8 path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(verdict(&out, "rmem_max"), "change", "{text}");
    assert!(text.contains("net.core.rmem_max = 67108864"), "{text}");
    assert_eq!(verdict(&out, "rtp_ports"), "change", "{text}");
    assert_eq!(verdict(&out, "media_cpus"), "change", "{text}");
    let cpus_line = line_of(&out, "media_cpus");
    assert!(cpus_line.contains("4096"), "names the missing CPU: {text}");
}

/// Runs the check with a stand-in `nft` first on PATH: it prints `output` and exits 0 when
/// `listed`, else prints it on stderr and exits 1 (as nft does for a missing chain).
/// With `reel_bin` empty the script has no reel binary and checks only each thread's port.
fn run_with_nft(root: &Path, args: &[&str], output: &str, listed: bool, reel_bin: &str) -> Output {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let listing = root.join("nft-output");
    std::fs::write(&listing, output).expect("write nft output");
    let script = if listed {
        format!("#!/bin/sh\ncat '{}'\n", listing.display())
    } else {
        format!("#!/bin/sh\ncat '{}' >&2\nexit 1\n", listing.display())
    };
    let nft = bin.join("nft");
    std::fs::write(&nft, script).expect("write nft");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_with_env(root, args, &[("PATH", path), ("REEL_BIN", reel_bin.into())])
}

#[test]
fn tproxy_mode_wants_one_rule_per_media_thread() {
    let (dir, cfg) = host_with_config(&TUNED, "[media]\nthreads = 2\ntproxy_port = 40000\n");
    let args = ["--config", cfg.to_str().expect("utf-8 path")];
    let chain = |rules: &str| {
        format!(
            "table inet reel {{\n\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle; policy accept;\n{rules}\t}}\n}}\n"
        )
    };
    let both = chain(
        "\t\tudp dport 16384-24575 tproxy ip to :40000\n\t\tudp dport 24576-32767 tproxy ip to :40001\n",
    );
    // Both rules in place: ok, checked per port without a reel binary, exactly with one.
    let reel = env!("CARGO_BIN_EXE_reel");
    for bin in ["", reel] {
        let out = run_with_nft(dir.path(), &args, &both, true, bin);
        let line = line_of(&out, "tproxy_rules");
        assert_eq!(verdict(&out, "tproxy_rules"), "ok", "{line}");
        if bin == reel {
            assert!(line.contains("reel check-config"), "{line}");
        }
    }

    // Thread 1's rule missing; a rule for :400010 is not one for :40001.
    let one = chain(
        "\t\tudp dport 16384-24575 tproxy ip to :40000\n\t\tudp dport 24576-32767 tproxy ip to :400010\n",
    );
    let out = run_with_nft(dir.path(), &args, &one, true, "");
    assert_eq!(verdict(&out, "tproxy_rules"), "change");
    let line = line_of(&out, "tproxy_rules");
    assert!(
        line.contains(":40001") && !line.contains(":40000 "),
        "{line}"
    );
    assert_eq!(out.status.code(), Some(1));

    // Not listed: a missing chain is a change; not being allowed to list is only said.
    for (error, want, says) in [
        (
            "Error: No such file or directory\n",
            "change",
            "no chain inet reel prerouting",
        ),
        (
            "Operation not permitted (you must be root)\n",
            "info",
            "run as root",
        ),
    ] {
        let out = run_with_nft(dir.path(), &args, error, false, "");
        assert_eq!(verdict(&out, "tproxy_rules"), want, "{error}");
        assert!(line_of(&out, "tproxy_rules").contains(says), "{error}");
    }

    // Right ports, wrong split: thread 0's rule stops short of where thread 1's begins.
    let short = chain(
        "\t\tudp dport 16384-20000 tproxy ip to :40000\n\t\tudp dport 24576-32767 tproxy ip to :40001\n",
    );
    let out = run_with_nft(dir.path(), &args, &short, true, "");
    assert_eq!(
        verdict(&out, "tproxy_rules"),
        "ok",
        "ports only without a binary"
    );
    let out = run_with_nft(dir.path(), &args, &short, true, reel);
    assert_eq!(verdict(&out, "tproxy_rules"), "change");
    let line = line_of(&out, "tproxy_rules");
    assert!(
        line.contains(
            "nft add rule inet reel prerouting udp dport 16384-24575 tproxy ip to :40000"
        ) && !line.contains(":40001"),
        "names the one rule to add: {line}"
    );
    assert_eq!(out.status.code(), Some(1));

    // Default mode: no such check at all.
    std::fs::write(&cfg, "[media]\nthreads = 2\n").expect("write config");
    let out = run_with_nft(dir.path(), &args, &both, true, reel);
    assert!(line_of(&out, "tproxy_rules").is_empty());
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(dir.path(), &["--calls", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--calls"));
    let out = run(dir.path(), &["--config", "/nonexistent/reel.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/reel.toml"));
}

/// Every file below `dir`, with its bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let modified = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .expect("mtime");
                out.push((p.clone(), std::fs::read(&p).expect("read"), modified));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_script_only_reads() {
    // Run on an untuned host with a config, it changes nothing: every file it reads keeps
    // its bytes and time, and it creates none.
    let (dir, cfg) = host_with_config(&UNTUNED, "[media]\nrcvbuf = 67108864\n");
    let before = snapshot(dir.path());
    let out = run(dir.path(), &["--config", cfg.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "it did find things to change");
    assert_eq!(snapshot(dir.path()), before, "the fake host was changed");
    // And no command in it writes a kernel setting.
    let text = std::fs::read_to_string(SCRIPT).expect("read script");
    for forbidden in ["sysctl -w", "sysctl --write", " tee ", "dd of="] {
        assert!(!text.contains(forbidden), "check.sh contains {forbidden}");
    }
}
