//! Running a check as a user whose file modes count (root without the two capabilities that
//! let it read and enter anything), with a deadline; and FIFOs where files are expected.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CAP_DAC_OVERRIDE: u32 = 1;

const CAP_DAC_READ_SEARCH: u32 = 2;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drop the two capabilities that let root read and enter anything from the calling thread's
/// effective set (capabilities are per thread; threads it starts inherit them).
fn drop_dac_caps_of_this_thread() {
    let mut h = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as the kernel expects.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()),
            0
        );
        d[0].effective &= !((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH));
        assert_eq!(
            libc::syscall(libc::SYS_capset, &h as *const CapHeader, d.as_ptr()),
            0
        );
    }
}

/// Run `f` as a user whose file modes count: on a thread of its own without
/// `CAP_DAC_OVERRIDE`/`CAP_DAC_READ_SEARCH` (the files the tests make are root's, so their
/// owner bits decide). A hang is a failure after 60 s.
pub fn unprivileged<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    within(60, move || {
        drop_dac_caps_of_this_thread();
        f()
    })
}

/// The same for a process: the two capabilities leave its bounding set before it starts, so
/// root's exec does not give them back.
pub fn unprivileged_cmd(c: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            for cap in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH] {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// `f` on a thread with a deadline: a hang is a failure, not a stuck test run.
pub fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still running after {secs} s"),
        Err(_) => panic!("the check panicked (see above)"),
    }
}

pub fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "{}",
        p.display()
    );
}
