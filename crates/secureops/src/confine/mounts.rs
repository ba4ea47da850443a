//! Applies a [`Plan`] inside the command's mount namespace (run by the
//! namespace's init, which holds every capability of the run's user
//! namespace until CMD starts without any).
//!
//! Order matters:
//! 1. descriptors (`O_PATH`) to what must stay visible (the working folder,
//!    allowed sockets) are opened first, while the host's tree is intact;
//! 2. hidden folders and private folders get their tmpfs;
//! 3. what must stay visible is bound back at its own path inside them;
//! 4. files and sockets are covered by an empty, unreadable file from a
//!    staging tmpfs that is detached afterwards (nothing CMD can write
//!    shows through a mask);
//! 5. config files are bound read-only onto themselves.
//!
//! CMD has no capability afterwards and its seccomp filter refuses the
//! mount API, so it cannot undo any of this. Mounts made here are private
//! to the namespace (unshare(1) makes propagation private).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{Mode, OFlags, StatVfsMountFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use super::plan::Plan;

/// Where the masks' empty file is made (inside the private `/run`, or
/// `/tmp` when the host has no `/run`), then detached.
const STAGE: &str = ".secureops-stage";

/// A path bound back after its folder was covered.
struct Keep {
    path: PathBuf,
    fd: OwnedFd,
    dir: bool,
}

/// Applies `plan`; any failure stops the run before CMD starts.
pub fn apply(plan: &Plan) -> anyhow::Result<()> {
    let mut keeps = Vec::new();
    for path in std::iter::once(&plan.cwd).chain(&plan.allowed_sockets) {
        if plan.covered(path) {
            let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .with_context(|| format!("cannot open {}", path.display()))?;
            let dir = rustix::fs::fstat(&fd).is_ok_and(|s| rustix::fs::FileType::from_raw_mode(s.st_mode).is_dir());
            keeps.push(Keep {
                path: path.clone(),
                fd,
                dir,
            });
        }
    }
    // Outer folders first, so a folder hidden inside the working folder
    // is hidden in the bound-back copy too; after each cover, what must
    // stay visible below it is bound back.
    let mut covers: Vec<(&PathBuf, bool)> = plan
        .private
        .iter()
        .map(|p| (p, false))
        .chain(plan.hide_dirs.iter().map(|p| (p, true)))
        .collect();
    covers.sort_by_key(|(p, _)| p.components().count());
    for (dir, hidden) in &covers {
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            continue; // under an outer cover already
        }
        let below: Vec<&Keep> = keeps.iter().filter(|k| k.path.starts_with(dir)).collect();
        let mode = match (hidden, below.is_empty()) {
            (false, _) => "1777",
            // Traversable (no listing) only when something below stays visible.
            (true, false) => "0111",
            (true, true) => "0000",
        };
        tmpfs(dir, mode).with_context(|| format!("cannot cover {}", dir.display()))?;
        for keep in below {
            bind_back(keep).with_context(|| format!("cannot keep {} visible", keep.path.display()))?;
        }
        if *hidden {
            remount_read_only(dir).with_context(|| format!("cannot lock {}", dir.display()))?;
        }
    }
    let stage = stage_dir(plan)?;
    let empty = stage.join("empty");
    std::fs::write(&empty, b"").context("cannot make the mask file")?;
    rustix::fs::chmod(&empty, Mode::empty())?;
    for target in plan.hide_files.iter().chain(&plan.sockets) {
        mask(&empty, target).with_context(|| format!("cannot hide {}", target.display()))?;
    }
    for file in &plan.read_only {
        match rustix::mount::mount_bind(file, file) {
            Ok(()) => remount_read_only(file).with_context(|| format!("cannot lock {}", file.display()))?,
            Err(Errno::NOENT | Errno::ACCESS) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot lock {}", file.display())),
        }
    }
    for dir in &plan.pinned {
        match rustix::mount::mount_bind_recursive(dir, dir) {
            Ok(()) | Err(Errno::NOENT | Errno::ACCESS) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot pin {}", dir.display())),
        }
    }
    for tree in &plan.read_only_trees {
        read_only_tree(tree).with_context(|| format!("cannot lock {}", tree.display()))?;
    }
    rustix::mount::unmount(&stage, UnmountFlags::DETACH).context("cannot detach the staging folder")?;
    let _ = std::fs::remove_dir(&stage);
    Ok(())
}

fn tmpfs(dir: &Path, mode: &str) -> anyhow::Result<()> {
    let data = std::ffi::CString::new(format!("mode={mode}"))?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(data.as_c_str()),
    )?;
    Ok(())
}

/// Re-creates `keep`'s path inside the tmpfs now covering it and binds
/// the original there.
fn bind_back(keep: &Keep) -> anyhow::Result<()> {
    if keep.dir {
        std::fs::create_dir_all(&keep.path)?;
    } else {
        if let Some(parent) = keep.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&keep.path, b"")?;
    }
    let source = format!("/proc/self/fd/{}", keep.fd.as_raw_fd());
    rustix::mount::mount_bind(source.as_str(), &keep.path)?;
    Ok(())
}

/// A small tmpfs of our own for the mask file; detached after use.
fn stage_dir(plan: &Plan) -> anyhow::Result<PathBuf> {
    let base = plan
        .private
        .iter()
        .find(|p| p.as_path() == Path::new("/run"))
        .or_else(|| plan.private.first())
        .context("no private folder to stage masks in")?;
    let stage = base.join(STAGE);
    std::fs::create_dir(&stage).with_context(|| format!("cannot create {}", stage.display()))?;
    rustix::mount::mount(
        "tmpfs",
        &stage,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=0700,size=16k"),
    )
    .context("cannot mount the staging tmpfs")?;
    Ok(stage)
}

/// Covers `target` with `empty`, read-only. A target that no longer exists
/// or that this user cannot reach needs no mask (CMD cannot reach it
/// either).
fn mask(empty: &Path, target: &Path) -> anyhow::Result<()> {
    match rustix::mount::mount_bind(empty, target) {
        Ok(()) => remount_read_only(target),
        // The init and CMD share a uid: what the init cannot reach, CMD
        // cannot either. Anything else (a folder where a file was
        // planned: ENOTDIR) fails the run.
        Err(Errno::NOENT | Errno::ACCESS) => Ok(()),
        Err(e) => bail!("{e}"),
    }
}

/// Binds `tree` onto itself with every mount below it, then makes each of
/// those copies read-only (a plain bind would hide the mounts below).
fn read_only_tree(tree: &Path) -> anyhow::Result<()> {
    rustix::mount::mount_bind_recursive(tree, tree)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(tree))
        .collect();
    // Outer mounts first; the same mount point listed twice (the copy
    // over the original) is remounted once.
    points.sort_by(|a, b| (a.components().count(), a).cmp(&(b.components().count(), b)));
    points.dedup();
    for p in points {
        remount_read_only(&p)?;
    }
    Ok(())
}

/// Mount points in mountinfo escape space, tab, newline and backslash as
/// `\ooo`.
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Changes into `cwd` as it now resolves (the bound-back copy), and checks
/// it is the same folder as before the mounts.
pub fn enter(cwd: &Path) -> anyhow::Result<()> {
    let before = rustix::fs::stat(".")?;
    std::env::set_current_dir(cwd)?;
    let after = rustix::fs::stat(".")?;
    if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino) {
        bail!("{} is not the folder the run was started in", cwd.display());
    }
    Ok(())
}

/// Makes the bind mount at `path` read-only, keeping the flags the kernel
/// locks for a less privileged mount namespace (nosuid, nodev, noexec,
/// atime): dropping one of them is refused.
fn remount_read_only(path: &Path) -> anyhow::Result<()> {
    let have = rustix::fs::statvfs(path)?.f_flag;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY;
    for (st, ms) in [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if have.contains(st) {
            flags |= ms;
        }
    }
    rustix::mount::mount_remount(path, flags, "")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\011c\\134d"), PathBuf::from("/a b\tc\\d"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/end\\04"), PathBuf::from("/end\\04"));
    }
}
