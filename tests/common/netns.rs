//! A private network namespace for tests and benches that install nftables rules, so the
//! host's rules are never touched.

use std::process::Command;

/// Moves the calling thread (and every process and thread it starts afterwards) into a new
/// network namespace with loopback up. `Err` says why that cannot be done here.
pub fn private_netns() -> Result<(), String> {
    // SAFETY: unshare takes no pointers; it changes only the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {} (needs CAP_SYS_ADMIN)",
            std::io::Error::last_os_error()
        ));
    }
    run("ip", &["link", "set", "lo", "up"])
}

/// Makes `rules` (as Reel prints them: `add rule inet reel prerouting ...`) the whole of the
/// `inet reel` table's `prerouting` chain: the table and chain are created when missing and
/// emptied of an earlier run's rules. No rules leaves the chain empty.
pub fn set_reel_rules<S: AsRef<str>>(rules: &[S]) -> Result<(), String> {
    run("nft", &["add", "table", "inet", "reel"])?;
    run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "reel",
            "prerouting",
            "{ type filter hook prerouting priority -150; }",
        ],
    )?;
    run("nft", &["flush", "chain", "inet", "reel", "prerouting"])?;
    for rule in rules {
        run("nft", &rule.as_ref().split_whitespace().collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Runs `cmd args`; `Err` carries its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
