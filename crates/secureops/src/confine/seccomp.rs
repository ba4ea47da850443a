//! The system-call filter of `run`: a default-allow seccomp filter, built
//! with `seccompiler`, that refuses the few system calls through which a
//! command could leave its confinement or reach past it. It is installed on
//! the calling thread only (the single-threaded process that then starts
//! CMD); seccomp filters are inherited across `fork` and kept across
//! `execve`, and can never be removed.
//!
//! # What it refuses (`EPERM` unless said otherwise)
//!
//! - `socket()` of any address family but `AF_UNIX`, `AF_INET`, `AF_INET6`,
//!   `AF_NETLINK` and `AF_ALG` (an allow-list, so families added to Linux
//!   later are refused too), and `socket(AF_NETLINK)` with any protocol but
//!   `NETLINK_ROUTE` (which glibc's `getaddrinfo` and `ip` need). Among the
//!   refused: `AF_VSOCK` (talks to the hypervisor, not network-namespaced
//!   before Linux 7.0), `AF_BLUETOOTH`, `AF_QIPCRTR`, `AF_NFC`, `AF_CAIF`,
//!   `AF_PHONET`, `AF_IEEE802154`, `AF_ISDN` (radios and modems the network
//!   namespace does not own, or only the host's one has), `AF_PACKET`,
//!   `AF_XDP`, `AF_KEY`, `AF_LLC` (need `CAP_NET_RAW`/`CAP_NET_ADMIN`,
//!   which CMD lacks anyway: refused so a mistake elsewhere does not open
//!   them), `AF_CAN`, `AF_TIPC`, `AF_RDS`, `AF_RXRPC`, `AF_KCM`, `AF_SMC`,
//!   `AF_MCTP`, `AF_PPPOX`, `AF_ATMPVC`/`AF_ATMSVC`, `AF_AX25`, `AF_NETROM`,
//!   `AF_ROSE`, `AF_X25`, `AF_APPLETALK`, `AF_IUCV` (no use to a coding
//!   agent; each first use loads a rarely audited kernel module, and several
//!   had local privilege escalations), and the non-route netlink protocols
//!   (`NETLINK_SOCK_DIAG`, `NETLINK_AUDIT`, `NETLINK_KOBJECT_UEVENT`,
//!   `NETLINK_GENERIC`, `NETLINK_NETFILTER`, ...). `AF_ALG` (the kernel's
//!   crypto API, used by some crypto libraries) is not a network.
//! - `io_uring_setup`, `io_uring_enter`, `io_uring_register`: io_uring makes
//!   sockets without `socket()` (`IORING_OP_SOCKET`), past the rule above.
//! - `ptrace`, `process_vm_readv`, `process_vm_writev`, `pidfd_getfd`:
//!   reading or steering other processes (of the same user, outside).
//! - `bpf`, `perf_event_open`, `userfaultfd`, `kexec_load`,
//!   `kexec_file_load`: large kernel attack surface no agent needs
//!   (`userfaultfd` makes kernel races easy to win).
//! - `setns`; `unshare` and `clone` whose flags hold a `CLONE_NEW*` bit
//!   (`CLONE_NEWUSER`, `NEWNS`, `NEWPID`, `NEWNET`, `NEWUTS`, `NEWIPC`,
//!   `NEWCGROUP`, and for `unshare` `NEWTIME`: in `clone` that bit is part
//!   of the exit signal): a new user namespace would give CMD back every
//!   capability over new namespaces. `clone3` gets `ENOSYS`: its flags are
//!   in a structure a seccomp filter cannot read, and `ENOSYS` makes glibc
//!   (and others) fall back to `clone`, which is checked.
//! - The mount API: `mount`, `umount2`, `pivot_root`, `fsopen`, `fsconfig`,
//!   `fsmount`, `fspick`, `move_mount`, `open_tree`, `open_tree_attr`,
//!   `mount_setattr`: the mounts set up for CMD stay as they are.
//! - `keyctl`, `add_key`, `request_key`: the session keyring is shared with
//!   the user's other processes (Kerberos tickets, ecryptfs keys...).
//! - `ioctl(fd, TIOCSTI)` and `ioctl(fd, TIOCLINUX)`: typing into a
//!   terminal (with `dev.tty.legacy_tiocsti = 1`, into the user's shell).
//!   Every other `ioctl` request works (job control, `TIOCGWINSZ`...).
//!
//! # What it does not refuse
//!
//! `AF_UNIX`, `AF_INET`, `AF_INET6` sockets (the network namespace and its
//! nftables rules confine them), `socketpair`, `sendto`/`sendmsg`,
//! `setsockopt`, `connect` (peers that refused `socket(AF_UNIX)`, `sendto`
//! or `socketpair` broke Chromium, ssh-agent and Python's asyncio);
//! signals, abstract and pathname Unix sockets (the Landlock layer's job);
//! files (mounts and permissions); system calls that need a capability CMD
//! does not have (`init_module`, `reboot`, `swapon`, `iopl`, `quotactl`,
//! `open_by_handle_at`...); `pidfd_open`, `pidfd_send_signal`, `kill`;
//! `process_madvise`, `personality`, `seccomp` and `landlock_*` (an agent
//! may sandbox itself further); `socket(AF_INET, SOCK_STREAM, IPPROTO_SMC)`
//! (SMC is negotiated over TCP, with the guard's listener, which does not
//! offer it: the connection stays plain TCP); `socketpair` of families
//! other than `AF_UNIX` (`AF_TIPC` has one).
//!
//! # Architectures
//!
//! Filters exist for x86_64 and aarch64 (`supported()` says so; elsewhere
//! `apply` fails). The filter first compares `seccomp_data.arch`: on a
//! mismatch seccompiler's code answers `SECCOMP_RET_KILL_PROCESS`, so a
//! system call through another ABI (i386 `int 0x80` on x86_64, a 32-bit
//! ARM program on aarch64) kills the process with `SIGSYS`: 32-bit
//! programs cannot run under the filter. seccompiler does not look at the
//! x32 ABI (x86_64's arch value, number | `0x4000_0000`), which would
//! otherwise reach every refused call under another number; our own guard,
//! placed before seccompiler's rules, refuses every number from
//! `0x4000_0000` up (x32, and invalid ones such as -1) with `EPERM` (x32 is
//! off in most kernels, this one included, but the filter must not rely on
//! it).
//!
//! # Breaks
//!
//! `strace`, `gdb`, `perf`; tools that make user namespaces themselves
//! (bubblewrap, Chromium's namespace sandbox: use `--no-sandbox`, rootless
//! podman); `ss` (`NETLINK_SOCK_DIAG`); `keyctl`; 32-bit programs; io_uring
//! users must fall back to other calls (libuv does), as must `clone3` users
//! (glibc does).

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_NETLINK: u64 = 16;
const AF_ALG: u64 = 38;
/// The families `socket()` may create; every other one is refused.
const ALLOWED_FAMILIES: [u64; 5] = [AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_ALG];
const NETLINK_ROUTE: u64 = 0;

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// `CLONE_NEW*` bits `clone()` can carry (`CLONE_NEWTIME`, 0x80, lies in
/// `clone`'s exit-signal byte: only `unshare` and `clone3` take it).
const CLONE_NAMESPACES: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];
const CLONE_NEWTIME: u64 = 0x80;

/// x32 system calls are x86_64 ones with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Classic BPF opcodes and seccomp return values for the hand-written guard
// (linux/bpf_common.h, linux/seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// One architecture's system-call numbers.
struct Arch {
    target: TargetArch,
    /// `AUDIT_ARCH_*` value of the native ABI.
    audit_arch: u32,
    /// Whether the x32 guard is needed (x86_64).
    x32: bool,
    socket: i64,
    ioctl: i64,
    clone: i64,
    clone3: i64,
    unshare: i64,
    /// Refused whatever their arguments.
    denied: &'static [(&'static str, i64)],
}

/// x86_64 (arch/x86/entry/syscalls/syscall_64.tbl).
#[cfg(any(target_arch = "x86_64", test))]
const X86_64: Arch = Arch {
    target: TargetArch::x86_64,
    audit_arch: 62 | 0x8000_0000 | 0x4000_0000,
    x32: true,
    socket: 41,
    ioctl: 16,
    clone: 56,
    clone3: 435,
    unshare: 272,
    denied: &[
        ("ptrace", 101),
        ("process_vm_readv", 310),
        ("process_vm_writev", 311),
        ("pidfd_getfd", 438),
        ("bpf", 321),
        ("perf_event_open", 298),
        ("userfaultfd", 323),
        ("kexec_load", 246),
        ("kexec_file_load", 320),
        ("setns", 308),
        ("mount", 165),
        ("umount2", 166),
        ("pivot_root", 155),
        ("open_tree", 428),
        ("move_mount", 429),
        ("fsopen", 430),
        ("fsconfig", 431),
        ("fsmount", 432),
        ("fspick", 433),
        ("mount_setattr", 442),
        ("open_tree_attr", 467),
        ("add_key", 248),
        ("request_key", 249),
        ("keyctl", 250),
        ("io_uring_setup", 425),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
    ],
};

/// aarch64 (include/uapi/asm-generic/unistd.h; from 424 on, numbers are
/// the same on every architecture).
#[cfg(any(target_arch = "aarch64", test))]
const AARCH64: Arch = Arch {
    target: TargetArch::aarch64,
    audit_arch: 183 | 0x8000_0000 | 0x4000_0000,
    x32: false,
    socket: 198,
    ioctl: 29,
    clone: 220,
    clone3: 435,
    unshare: 97,
    denied: &[
        ("ptrace", 117),
        ("process_vm_readv", 270),
        ("process_vm_writev", 271),
        ("pidfd_getfd", 438),
        ("bpf", 280),
        ("perf_event_open", 241),
        ("userfaultfd", 282),
        ("kexec_load", 104),
        ("kexec_file_load", 294),
        ("setns", 268),
        ("mount", 40),
        ("umount2", 39),
        ("pivot_root", 41),
        ("open_tree", 428),
        ("move_mount", 429),
        ("fsopen", 430),
        ("fsconfig", 431),
        ("fsmount", 432),
        ("fspick", 433),
        ("mount_setattr", 442),
        ("open_tree_attr", 467),
        ("add_key", 217),
        ("request_key", 218),
        ("keyctl", 219),
        ("io_uring_setup", 425),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
    ],
};

#[cfg(target_arch = "x86_64")]
const NATIVE: Option<&Arch> = Some(&X86_64);
#[cfg(target_arch = "aarch64")]
const NATIVE: Option<&Arch> = Some(&AARCH64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE: Option<&Arch> = None;

/// Whether this build has a filter for this machine's architecture.
pub fn supported() -> Result<(), String> {
    match NATIVE {
        Some(_) => Ok(()),
        None => Err(format!(
            "no system-call filter for {} in this build (x86_64 and aarch64 only)",
            std::env::consts::ARCH
        )),
    }
}

/// Installs the filter on the calling thread (needs no_new_privs set, or
/// CAP_SYS_ADMIN; seccompiler sets no_new_privs on this thread itself).
/// Only this thread and what it starts afterwards are filtered; do it after
/// the namespaces and mounts are made (it refuses `unshare`, `mount`...),
/// just before starting CMD.
pub fn apply() -> anyhow::Result<()> {
    supported().map_err(|reason| anyhow!(reason))?;
    let arch = NATIVE.ok_or_else(|| anyhow!("no system-call filter for this architecture"))?;
    let program = program(arch).context("cannot build the system-call filter")?;
    seccompiler::apply_filter(&program).context("cannot install the system-call filter")?;
    Ok(())
}

/// The whole program: our guard, then seccompiler's rules.
fn program(arch: &Arch) -> Result<BpfProgram, BackendError> {
    let rules = rules(arch)?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(EPERM), arch.target)?;
    let compiled = BpfProgram::try_from(filter)?;
    let mut program = guard(arch);
    program.extend(compiled);
    Ok(program)
}

/// Hand-written prologue, for what one seccompiler filter cannot say: x32
/// numbers (seccompiler checks only the arch value, which x32 shares with
/// x86_64) and `clone3`'s other errno. Falls through to seccompiler's
/// program, which checks the arch itself, whenever it does not answer.
fn guard(arch: &Arch) -> Vec<sock_filter> {
    let stmt = |code, k| sock_filter { code, jt: 0, jf: 0, k };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    // Numbers are small non-negative constants.
    let clone3 = u32::try_from(arch.clone3).unwrap_or(u32::MAX);
    if arch.x32 {
        vec![
            /* 0 */ stmt(BPF_LD_W_ABS, DATA_ARCH),
            /* 1 */ jump(BPF_JEQ_K, arch.audit_arch, 0, 5), // other ABI: to 7
            /* 2 */ stmt(BPF_LD_W_ABS, DATA_NR),
            /* 3 */ jump(BPF_JGE_K, X32_SYSCALL_BIT, 2, 0), // x32 (or junk): to 6
            /* 4 */ jump(BPF_JEQ_K, clone3, 0, 2), // not clone3: to 7
            /* 5 */ stmt(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS),
            /* 6 */ stmt(BPF_RET_K, SECCOMP_RET_ERRNO | EPERM),
            // 7: seccompiler's program.
        ]
    } else {
        vec![
            /* 0 */ stmt(BPF_LD_W_ABS, DATA_ARCH),
            /* 1 */ jump(BPF_JEQ_K, arch.audit_arch, 0, 3), // other ABI: to 5
            /* 2 */ stmt(BPF_LD_W_ABS, DATA_NR),
            /* 3 */ jump(BPF_JEQ_K, clone3, 0, 1), // not clone3: to 5
            /* 4 */ stmt(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS),
            // 5: seccompiler's program.
        ]
    }
}

/// seccompiler rules, matched with `EPERM`: within a rule all conditions
/// must hold, and any rule of a system call is enough.
fn rules(arch: &Arch) -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    // Dword (low half only): `socket` and `ioctl` take C `int`s, `clone`
    // reads only the low half of its flags (and `unshare` rejects the upper
    // one), so junk in the upper half must not dodge a rule.
    let cond = |arg, op, value| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value);
    let has_bit = |arg, bit| cond(arg, SeccompCmpOp::MaskedEq(bit), bit);

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(_, nr) in arch.denied {
        rules.insert(nr, Vec::new()); // no condition: always matched
    }

    let other_family = ALLOWED_FAMILIES
        .iter()
        .map(|&family| cond(0, SeccompCmpOp::Ne, family))
        .collect::<Result<Vec<_>, _>>()?;
    let netlink_not_route = vec![
        cond(0, SeccompCmpOp::Eq, AF_NETLINK)?,
        cond(2, SeccompCmpOp::Ne, NETLINK_ROUTE)?,
    ];
    rules.insert(
        arch.socket,
        vec![SeccompRule::new(other_family)?, SeccompRule::new(netlink_not_route)?],
    );

    rules.insert(
        arch.ioctl,
        vec![
            SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, TIOCSTI)?])?,
            SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, TIOCLINUX)?])?,
        ],
    );

    let per_bit = |bits: &[u64]| -> Result<Vec<SeccompRule>, BackendError> {
        bits.iter()
            .map(|&bit| SeccompRule::new(vec![has_bit(0, bit)?]))
            .collect()
    };
    rules.insert(arch.clone, per_bit(&CLONE_NAMESPACES)?);
    let mut unshare_bits = CLONE_NAMESPACES.to_vec();
    unshare_bits.push(CLONE_NEWTIME);
    rules.insert(arch.unshare, per_bit(&unshare_bits)?);
    Ok(rules)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use std::process::Command;

    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    const RET_EPERM: u32 = SECCOMP_RET_ERRNO | EPERM;
    const RET_ENOSYS: u32 = SECCOMP_RET_ERRNO | ENOSYS;
    const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
    const AUDIT_ARCH_ARM: u32 = 40 | 0x4000_0000;

    /// A classic-BPF interpreter for the instructions seccompiler and our
    /// guard emit, to check every decision of both architectures' programs
    /// on any machine (little-endian `seccomp_data`, as on both).
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &program[pc];
            pc += 1;
            let cond = |taken: bool| if taken { ins.jt as usize } else { ins.jf as usize };
            match ins.code {
                0x20 => {
                    let at = ins.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                0x54 => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 => pc += cond(acc == ins.k),
                0x25 => pc += cond(acc > ins.k),
                0x35 => pc += cond(acc >= ins.k),
                0x06 => return ins.k,
                code => panic!("unexpected BPF opcode {code:#x}"),
            }
        }
    }

    fn nr(arch: &Arch, name: &str) -> u32 {
        let (_, nr) = arch.denied.iter().find(|(n, _)| *n == name).unwrap();
        u32::try_from(*nr).unwrap()
    }

    fn check_arch(arch: &Arch, getpid: u32) {
        let program = program(arch).unwrap();
        let call = |nr: i64, args: [u64; 6]| run(&program, arch.audit_arch, u32::try_from(nr).unwrap(), args);
        for &(name, number) in arch.denied {
            assert_eq!(call(number, [0; 6]), RET_EPERM, "{name}");
        }
        assert_eq!(call(i64::from(getpid), [0; 6]), RET_ALLOW);
        assert_eq!(call(arch.clone3, [0; 6]), RET_ENOSYS);

        // socket(): the allow-list, netlink route only, upper halves ignored.
        for family in 0..64u64 {
            let expected = if ALLOWED_FAMILIES.contains(&family) {
                RET_ALLOW
            } else {
                RET_EPERM
            };
            assert_eq!(call(arch.socket, [family, 1, 0, 0, 0, 0]), expected, "family {family}");
            let junk = 0xdead_beef_0000_0000 | family;
            assert_eq!(
                call(arch.socket, [junk, 1, 0, 0, 0, 0]),
                expected,
                "family {family} (junk)"
            );
        }
        assert_eq!(call(arch.socket, [AF_NETLINK, 3, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(arch.socket, [AF_NETLINK, 3, 4, 0, 0, 0]), RET_EPERM);
        assert_eq!(call(arch.socket, [AF_NETLINK, 3, 0x1_0000_0000, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(arch.socket, [AF_INET, 1, 6, 0, 0, 0]), RET_ALLOW);

        // ioctl(): only the two terminal-injection requests.
        assert_eq!(call(arch.ioctl, [0, TIOCSTI, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(call(arch.ioctl, [0, TIOCLINUX, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(
            call(arch.ioctl, [0, 0xffff_ffff_0000_0000 | TIOCSTI, 0, 0, 0, 0]),
            RET_EPERM
        );
        assert_eq!(call(arch.ioctl, [0, 0x5413, 0, 0, 0, 0]), RET_ALLOW); // TIOCGWINSZ
        assert_eq!(call(arch.ioctl, [0, 0x540F, 0, 0, 0, 0]), RET_ALLOW); // TIOCGPGRP

        // clone(): fork and pthread flags pass, any namespace bit does not.
        let fork = 0x0120_0011; // CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
        let thread = 0x003d_0f00; // glibc's pthread_create flags
        assert_eq!(call(arch.clone, [fork, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(arch.clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        for bit in CLONE_NAMESPACES {
            assert_eq!(
                call(arch.clone, [fork | bit, 0, 0, 0, 0, 0]),
                RET_EPERM,
                "clone {bit:#x}"
            );
            assert_eq!(call(arch.unshare, [bit, 0, 0, 0, 0, 0]), RET_EPERM, "unshare {bit:#x}");
        }
        assert_eq!(call(arch.unshare, [CLONE_NEWTIME, 0, 0, 0, 0, 0]), RET_EPERM);
        assert_eq!(call(arch.unshare, [0x200, 0, 0, 0, 0, 0]), RET_ALLOW); // CLONE_FS
        assert_eq!(call(arch.unshare, [0x400, 0, 0, 0, 0, 0]), RET_ALLOW); // CLONE_FILES

        // Another ABI of the same machine: seccompiler kills the process.
        let other = if arch.x32 { AUDIT_ARCH_I386 } else { AUDIT_ARCH_ARM };
        assert_eq!(run(&program, other, getpid, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&program, other, 1, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn x86_64_program() {
        check_arch(&X86_64, 39);
        let program = program(&X86_64).unwrap();
        // x32: every number with the x32 bit (socket, getpid...) is refused.
        for nr in [
            X32_SYSCALL_BIT | 41,
            X32_SYSCALL_BIT | 39,
            X32_SYSCALL_BIT | 512,
            u32::MAX,
        ] {
            assert_eq!(
                run(&program, X86_64.audit_arch, nr, [40, 1, 0, 0, 0, 0]),
                RET_EPERM,
                "{nr:#x}"
            );
        }
    }

    #[test]
    fn aarch64_program() {
        check_arch(&AARCH64, 172);
    }

    #[test]
    fn supported_here() {
        let native = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
        assert_eq!(supported().is_ok(), native);
    }

    /// Runs `f` on a new thread under the filter (no_new_privs, like the
    /// filter, is per thread: the test process itself stays unfiltered).
    fn filtered<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            rustix::thread::set_no_new_privs(true).unwrap();
            apply().unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    fn python(script: &str) -> String {
        let out = Command::new("python3").arg("-c").arg(script).output().expect("python3");
        assert!(
            out.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A Python snippet printing the errno of `syscall(nr, args...)`, or
    /// `ok` when it succeeds.
    fn syscall_errno(nr: u32, args: &[i64]) -> String {
        let args: String = args.iter().map(|a| format!(", L({a})")).collect();
        format!(
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n\
             L = ctypes.c_long\nr = libc.syscall(L({nr}){args})\nprint('ok' if r >= 0 else ctypes.get_errno())"
        )
    }

    #[test]
    fn refuses_families_in_thread() {
        use rustix::io::Errno;
        use rustix::net::{AddressFamily, SocketType, socket};
        let results = filtered(|| {
            let mut refused = Vec::new();
            for family in [40u16, 17, 31, 15, 29, 30, 21, 26, 39, 44, 42, 34, 36, 43, 45, 33, 41] {
                let r = socket(AddressFamily::from_raw(family), SocketType::DGRAM, None);
                refused.push((family, r.err()));
            }
            let diag = socket(
                AddressFamily::NETLINK,
                SocketType::RAW,
                Some(rustix::net::netlink::SOCK_DIAG),
            );
            let route = socket(AddressFamily::NETLINK, SocketType::RAW, None);
            (refused, diag.err(), route.err())
        });
        for (family, err) in results.0 {
            assert_eq!(err, Some(Errno::PERM), "family {family}");
        }
        assert_eq!(results.1, Some(Errno::PERM), "NETLINK_SOCK_DIAG");
        assert_eq!(results.2, None, "NETLINK_ROUTE");
    }

    #[test]
    fn keeps_ip_and_unix_sockets_in_thread() {
        use std::net::{TcpListener, TcpStream, UdpSocket};
        use std::os::unix::net::{UnixDatagram, UnixStream};
        filtered(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            if let Err(e) = UdpSocket::bind("[::1]:0") {
                assert_ne!(e.raw_os_error(), Some(1), "AF_INET6 refused"); // ::1 may be absent
            }
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            a.send_to(b"ping", b.local_addr().unwrap()).unwrap(); // sendto
            let mut buf = [0; 4];
            assert_eq!(b.recv(&mut buf).unwrap(), 4);
            let (mut x, mut y) = UnixStream::pair().unwrap(); // socketpair
            std::io::Write::write_all(&mut x, b"hi").unwrap();
            std::io::Read::read_exact(&mut y, &mut buf[..2]).unwrap();
            UnixDatagram::unbound().unwrap(); // socket(AF_UNIX)
        });
    }

    #[test]
    fn refuses_mount_api_in_thread() {
        use rustix::io::Errno;
        use rustix::mount::{FsOpenFlags, MountFlags, fsopen, mount};
        let (mounted, opened) = filtered(|| {
            // Harmless if the filter were missing: the target does not exist.
            let m = mount(
                "none",
                "/nonexistent-secureops-seccomp-test",
                "tmpfs",
                MountFlags::empty(),
                None,
            );
            (m.err(), fsopen("tmpfs", FsOpenFlags::empty()).err())
        });
        assert_eq!(mounted, Some(Errno::PERM));
        assert_eq!(opened, Some(Errno::PERM));
    }

    #[test]
    fn children_inherit_the_filter() {
        let arch = NATIVE.unwrap();
        let io_uring = syscall_errno(nr(arch, "io_uring_setup"), &[4, 0]);
        let keyctl = syscall_errno(nr(arch, "keyctl"), &[0, -3, 0]); // KEYCTL_GET_KEYRING_ID, session
        let ptrace = syscall_errno(nr(arch, "ptrace"), &[12, 1, 0, 0]); // PTRACE_GETREGS of pid 1
        let clone3 = syscall_errno(435, &[0, 0]); // EINVAL unfiltered
        let x32 = syscall_errno(X32_SYSCALL_BIT | 41, &[40, 1, 0]); // x32 socket(AF_VSOCK)
        let vsock = "import socket\ntry:\n    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n    print('ok')\n\
                     except OSError as e:\n    print(e.errno)";
        let unshare = syscall_errno(u32::try_from(arch.unshare).unwrap(), &[0x1000_0000]); // CLONE_NEWUSER
        let out = filtered(move || {
            let unshare_cmd = Command::new("unshare").args(["-U", "true"]).output().unwrap();
            (
                python(&io_uring),
                python(&keyctl),
                python(&ptrace),
                python(&clone3),
                cfg!(target_arch = "x86_64").then(|| python(&x32)),
                python(vsock),
                python(&unshare),
                unshare_cmd.status.success(),
            )
        });
        assert_eq!(out.0, "1", "io_uring_setup");
        assert_eq!(out.1, "1", "keyctl");
        assert_eq!(out.2, "1", "ptrace");
        assert_eq!(out.3, "38", "clone3 gets ENOSYS");
        if let Some(x32) = out.4 {
            assert_eq!(x32, "1", "x32 socket");
        }
        assert_eq!(out.5, "1", "AF_VSOCK");
        assert_eq!(out.6, "1", "unshare(CLONE_NEWUSER)");
        assert!(!out.7, "unshare -U must fail");
    }

    #[test]
    fn refuses_tiocsti_keeps_tiocgwinsz() {
        // The pty becomes the script's controlling terminal, so TIOCSTI is
        // allowed by the tty layer itself (with dev.tty.legacy_tiocsti=1).
        let script = "import os, fcntl, termios\nm, s = os.openpty()\nos.setsid()\n\
                      fd = os.open(os.ttyname(s), os.O_RDWR)\n\
                      fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))\n\
                      try:\n    fcntl.ioctl(fd, termios.TIOCSTI, b'x')\n    print('ok')\n\
                      except OSError as e:\n    print(e.errno)";
        let legacy = std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti").unwrap_or_default();
        if legacy.trim() == "1" {
            assert_eq!(python(script), "ok", "control: TIOCSTI works without the filter");
        }
        let owned = script.to_owned();
        assert_eq!(filtered(move || python(&owned)), "1");
    }

    #[test]
    fn ordinary_programs_run() {
        let script = "import asyncio, socket, subprocess, threading\n\
                      asyncio.run(asyncio.sleep(0))\n\
                      t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
                      subprocess.run(['true'], check=True)\n\
                      socket.getaddrinfo('localhost', 80, flags=socket.AI_ADDRCONFIG)\n\
                      print('ok')";
        let (sh, py) = filtered(move || {
            let sh = Command::new("sh")
                .args(["-c", "echo ok; ls / >/dev/null"])
                .output()
                .unwrap();
            (String::from_utf8(sh.stdout).unwrap(), python(script))
        });
        assert_eq!(sh.trim(), "ok");
        assert_eq!(py, "ok");
    }
}
