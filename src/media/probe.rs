//! Kernel probe: can this process create an io_uring? Containers often block it (seccomp,
//! `kernel.io_uring_disabled`), and then the epoll/recvmmsg backend takes over, visibly.

use crate::config::IoBackend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Epoll,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// The backend and the reason, for the start-up log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendChoice {
    pub backend: Backend,
    pub reason: String,
}

/// Tries `io_uring_setup(2)` once. `Err` carries the errno text.
pub fn probe_uring() -> Result<(), String> {
    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: [u32; 10],
        cq_off: [u32; 10],
    }
    let mut params = Params::default();
    // SAFETY: io_uring_setup reads and writes exactly one `struct io_uring_params` (120 bytes,
    // laid out as `Params` above) through the pointer, which is valid for the call. The
    // returned fd, if any, is closed right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4 as libc::c_long,
            &mut params as *mut Params,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: `fd` is a descriptor this function just created and owns.
    unsafe {
        libc::close(fd as libc::c_int);
    }
    Ok(())
}

fn disabled_sysctl() -> Option<String> {
    let v = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?;
    let v = v.trim();
    (v != "0").then(|| format!("kernel.io_uring_disabled = {v}"))
}

/// Chooses the backend for `requested`. `Err` when `uring` is forced and unavailable.
pub fn choose_backend(requested: IoBackend) -> Result<BackendChoice, String> {
    let probe = probe_uring();
    match (requested, probe) {
        (IoBackend::Epoll, _) => Ok(BackendChoice {
            backend: Backend::Epoll,
            reason: "forced by io_backend = epoll".into(),
        }),
        (IoBackend::Uring, Ok(())) => Ok(BackendChoice {
            backend: Backend::Uring,
            reason: "forced by io_backend = uring; kernel probe ok".into(),
        }),
        (IoBackend::Uring, Err(e)) => Err(format!(
            "io_backend = uring but io_uring is unavailable: {e}{}",
            disabled_sysctl()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        )),
        (IoBackend::Auto, Ok(())) => Ok(BackendChoice {
            backend: Backend::Uring,
            reason: "auto: io_uring_setup succeeded".into(),
        }),
        (IoBackend::Auto, Err(e)) => Ok(BackendChoice {
            backend: Backend::Epoll,
            reason: format!(
                "auto: io_uring unavailable ({e}{}), falling back to epoll",
                disabled_sysctl()
                    .map(|s| format!("; {s}"))
                    .unwrap_or_default()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_epoll_is_always_epoll() {
        let c = choose_backend(IoBackend::Epoll).expect("epoll never fails");
        assert_eq!(c.backend, Backend::Epoll);
        assert!(c.reason.contains("forced"));
    }

    #[test]
    fn auto_agrees_with_the_probe() {
        let c = choose_backend(IoBackend::Auto).expect("auto never fails");
        let expected = if probe_uring().is_ok() {
            Backend::Uring
        } else {
            Backend::Epoll
        };
        assert_eq!(c.backend, expected);
        assert!(!c.reason.is_empty());
    }

    #[test]
    fn forced_uring_fails_only_when_probe_fails() {
        assert_eq!(
            choose_backend(IoBackend::Uring).is_ok(),
            probe_uring().is_ok()
        );
    }
}
