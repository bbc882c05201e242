//! Helpers for the integration tests: finding the `vmm` binary and guest images, deciding
//! whether a KVM test can run here, and running the VMM with a deadline.
//!
//! Policy (DESIGN.md §7): a test that needs root or /dev/kvm skips with a message when either
//! is missing, and fails in CI (`CI=true`), where a skip would hide that nothing ran.

pub mod netns;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The `vmm` binary of the profile these tests were built with (`target/<profile>/vmm`).
pub fn vmm_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("vmm");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p vmm; `make test` does)",
        bin.display()
    );
    bin
}

/// The `tapctl` binary next to `vmm`.
pub fn tapctl_bin() -> PathBuf {
    vmm_bin().with_file_name("tapctl")
}

/// A file in guest-images/out, which must have been built.
pub fn guest_image(name: &str) -> PathBuf {
    let path = workspace_root().join("guest-images/out").join(name);
    assert!(
        path.exists(),
        "{} does not exist: run `make netprobe` first (`make test` does)",
        path.display()
    );
    path
}

/// Whether we run in CI, where skipping is failing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Prints a skip notice where the test harness does not capture it.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// True when this process is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a KVM test can run: /dev/kvm opens read-write. Otherwise skips (or panics in CI).
pub fn require_kvm(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            let reason = format!(
                "/dev/kvm cannot be opened ({e}); KVM tests need it (run as root on a KVM host)"
            );
            assert!(!in_ci(), "{test}: {reason}");
            skip(test, &reason);
            false
        }
    }
}

/// Whether a test that needs root can run. Otherwise skips (or panics in CI).
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!in_ci(), "{test}: needs root");
    skip(test, "needs root");
    false
}

/// Whether /dev/kvm is PVM, which runs only PVM-aware kernels (and netprobe, emulated).
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// What a VMM run printed and how it ended.
pub struct Run {
    /// The guest console (the VMM's stdout).
    pub stdout: String,
    /// The VMM's own messages.
    pub stderr: String,
    /// Exit status code (None if killed by a signal).
    pub code: Option<i32>,
}

impl Run {
    fn from(output: Output) -> Self {
        Run {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            code: output.status.code(),
        }
    }

    /// The first console line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.stdout.lines().find(|l| l.starts_with(prefix))
    }

    /// Both streams, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `vmm` with `args`, no stdin, and a guest deadline of `timeout_s` seconds (`--timeout`).
pub fn run_vmm(args: &[&str], timeout_s: u64) -> Run {
    run_command(
        Command::new(vmm_bin())
            .args(args)
            .args(["--timeout", &timeout_s.to_string()]),
    )
}

/// Runs a prepared command with stdin closed and collects its output.
pub fn run_command(cmd: &mut Command) -> Run {
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("cannot run the command");
    Run::from(output)
}

/// The value of `key=` in a `netprobe: ...` line (values in quotes may contain spaces).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.find('"').map(|end| &quoted[..end]);
    }
    Some(rest.split(' ').next().unwrap_or(""))
}

/// The netprobe bzImage's path, as a string for argument lists.
pub fn netprobe() -> String {
    guest_image("netprobe.bzImage").to_str().unwrap().to_owned()
}

/// Root and KVM, or skip (fail in CI).
pub fn require_root_and_kvm(test: &str) -> bool {
    require_root(test) && require_kvm(test)
}

/// netprobe passed and the VMM exited 0.
pub fn assert_pass(run: &Run) {
    assert!(
        run.line("netprobe: PASS").is_some(),
        "netprobe did not pass\n{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
}

/// A failed start: exit status 1, exactly one `vmm: ...` line on stderr containing `needle`,
/// and no guest output.
pub fn assert_one_line_error(run: &Run, needle: &str) {
    assert_eq!(run.code, Some(1), "{}", run.dump());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected\n{}", run.dump());
    assert!(lines[0].starts_with("vmm: "), "{}", run.dump());
    assert!(
        lines[0].contains(needle),
        "expected {needle:?}\n{}",
        run.dump()
    );
    assert!(
        run.stdout.is_empty(),
        "no guest output expected\n{}",
        run.dump()
    );
}

/// A `key=value` of netprobe's `netprobe: tx_frames=...` counters line, as a number.
pub fn probe_counter(run: &Run, key: &str) -> u64 {
    let line = run
        .line("netprobe: tx_frames=")
        .unwrap_or_else(|| panic!("no counters line\n{}", run.dump()));
    field(line, key).unwrap().parse().unwrap()
}

/// A `key=value` of the VMM's `<nic>: tap=...` line on stderr, as a number.
pub fn vmm_counter(run: &Run, nic: &str, key: &str) -> u64 {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with(&format!("{nic}: ")))
        .unwrap_or_else(|| panic!("no {nic} line\n{}", run.dump()));
    field(line, key).unwrap().parse().unwrap()
}

/// A minimal 64-bit ELF whose single segment holds `code` at 0x100000 (the entry point).
/// For tests that need a guest doing one specific, usually wrong, thing.
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    elf_with_segments(code, &[(0x10_0000, code.len() as u64)])
}

/// A 64-bit ELF entered at 0x100000 with one PT_LOAD segment per `(paddr, memsz)`, each of
/// them loading `code` (file size `code.len()`, the rest up to `memsz` being bss).
pub fn elf_with_segments(code: &[u8], segments: &[(u64, u64)]) -> Vec<u8> {
    const ENTRY: u64 = 0x10_0000;
    const EHDR: usize = 0x40;
    const PHDR: usize = 0x38;
    let code_at = (EHDR + PHDR * segments.len()) as u64;
    let mut elf = vec![0u8; EHDR];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    elf[0x18..0x20].copy_from_slice(&ENTRY.to_le_bytes());
    elf[0x20..0x28].copy_from_slice(&(EHDR as u64).to_le_bytes());
    elf[0x34..0x36].copy_from_slice(&(EHDR as u16).to_le_bytes());
    elf[0x36..0x38].copy_from_slice(&(PHDR as u16).to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    for &(paddr, memsz) in segments {
        let mut ph = vec![0u8; PHDR];
        ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&7u32.to_le_bytes()); // RWX
        ph[8..0x10].copy_from_slice(&code_at.to_le_bytes());
        ph[0x10..0x18].copy_from_slice(&paddr.to_le_bytes());
        ph[0x18..0x20].copy_from_slice(&paddr.to_le_bytes());
        ph[0x20..0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
        ph[0x28..0x30].copy_from_slice(&memsz.to_le_bytes());
        elf.extend(ph);
    }
    elf.extend_from_slice(code);
    elf
}

/// Copies of the `vmm` binary and the netprobe ELF that an unprivileged user can run and read,
/// whatever the permissions of the checkout (CI may clone into a 0700 directory). For tests that
/// drop to `nobody` to check a permission error; removed when dropped.
pub struct UnprivilegedCopies {
    /// The directory holding them (0755, removed on drop).
    pub dir: PathBuf,
    /// The copied `vmm`.
    pub vmm: String,
    /// The copied netprobe.elf.
    pub kernel: String,
}

impl UnprivilegedCopies {
    /// Makes the copies in a fresh 0755 directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vmm-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = |from: &Path, name: &str, mode: u32| {
            let to = dir.join(name);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
            to.to_str().unwrap().to_owned()
        };
        let vmm = copy(&vmm_bin(), "vmm", 0o755);
        let kernel = copy(&guest_image("netprobe.elf"), "netprobe.elf", 0o644);
        UnprivilegedCopies { dir, vmm, kernel }
    }
}

impl Drop for UnprivilegedCopies {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A scratch file that is removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// Writes `bytes` to a fresh file named after `tag`.
    pub fn with(tag: &str, bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("vmm-test-{}-{tag}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    /// Its path as &str.
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_field_plain_and_quoted() {
        let line = r#"netprobe: boot mem_mib=127 e820_entries=4 cmdline="a b=c d""#;
        assert_eq!(field(line, "mem_mib"), Some("127"));
        assert_eq!(field(line, "e820_entries"), Some("4"));
        assert_eq!(field(line, "cmdline"), Some("a b=c d"));
        assert_eq!(field(line, "nope"), None);
    }
}
