//! Finding the PostgreSQL server tools and running them as the right OS user.
//!
//! The tools come from one directory so their versions match: the directory
//! of `initdb` on `PATH` (symlinks resolved), else the highest `/usr/lib/postgresql/*/bin`
//! (Debian keeps server binaries off `PATH`). `$PGGATE_TEST_PGBIN` overrides
//! both. A missing install is a loud failure, never a skip.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const INSTALL_HINT: &str =
    "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup, psql, pgbench) \
     are required by the integration tests. Install them with \
     `apt-get install -y postgresql postgresql-contrib` (Debian/Ubuntu), or run `.ci/run` \
     which does it for you; or point PGGATE_TEST_PGBIN at a directory holding them.";

/// The directory holding `initdb` and its sibling tools.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(locate_bin_dir)
}

fn locate_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGGATE_TEST_PGBIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return dir;
        }
        panic!(
            "\n\n*** PGGATE_TEST_PGBIN={} has no initdb ***\n{INSTALL_HINT}\n",
            dir.display()
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // A symlink on PATH (e.g. /usr/local/bin/initdb) leads to
                // the install directory, where the sibling tools are.
                return std::fs::canonicalize(&initdb)
                    .ok()
                    .and_then(|real| real.parent().map(Path::to_path_buf))
                    .unwrap_or(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "\n\n*** no PostgreSQL server install found (initdb is neither on PATH nor in \
             /usr/lib/postgresql/*/bin) ***\n{INSTALL_HINT}\n"
        ),
    }
}

/// Full path of a PostgreSQL tool (`psql`, `pgbench`, `pg_ctl`, ...): from
/// [`bin_dir`] when it is there, else whatever `PATH` finds.
pub fn tool(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if path.is_file() {
        path
    } else {
        PathBuf::from(name)
    }
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` OS user, which runs the servers when the
/// tests run as root (initdb and postgres refuse to run as root).
pub fn postgres_os_user() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let name = CString::new("postgres").expect("static C string");
        // SAFETY: getpwnam receives a valid NUL-terminated string; the
        // returned record is read at once, before any other passwd call.
        let entry = unsafe { libc::getpwnam(name.as_ptr()) };
        if entry.is_null() {
            panic!(
                "\n\n*** the tests run as root, so the PostgreSQL servers must run as the \
                 `postgres` OS user, which does not exist ***\n{INSTALL_HINT}\n"
            );
        }
        // SAFETY: entry is non-null and points at getpwnam's static record.
        unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
    })
}

/// `chown postgres:postgres path` when running as root; nothing otherwise.
pub fn give_to_server_user(path: &Path) {
    if !running_as_root() {
        return;
    }
    let (uid, gid) = postgres_os_user();
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
}

/// A command for a server tool run as the user that owns the data
/// directories: `runuser -u postgres -- TOOL` when root, `TOOL` otherwise.
/// `workdir` must be readable by that user (tools complain about an
/// inaccessible current directory).
pub fn server_command(name: &str, workdir: &Path) -> Command {
    let program = tool(name);
    let mut cmd = if running_as_root() {
        postgres_os_user();
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir(workdir);
    cmd.env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    cmd
}

/// The shell prefix that [`server_command`] uses, for scripts.
pub fn server_shell_prefix() -> String {
    if running_as_root() {
        "runuser -u postgres -- ".to_string()
    } else {
        String::new()
    }
}
