//! A private PostgreSQL cluster for the fault tests: they restart and stall their database,
//! which must never happen to the shared server every other test runs on.
//!
//! The cluster runs as the `postgres` OS user when the tests run as root (PostgreSQL
//! refuses root), on a free port of 127.0.0.1 with trust authentication and its socket in
//! its own temp dir; dropping it stops it and deletes its files.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use sea_orm::{ConnectionTrait, Database};

use crate::{Backend, TestDatabase};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A running throw-away PostgreSQL cluster.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    /// Initialises and starts a cluster (about 2 s); panics with the reason when it cannot.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("enroll-faults-pg-")
            .tempdir()
            .expect("temp dir for the private cluster");
        if running_as_root() {
            chown_to_postgres(dir.path());
        }
        let port = free_port();
        let cluster = Self { dir, port };
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.pg_ctl(&["start", "-o", &cluster.server_options()]);
        cluster
    }

    /// The URL of the cluster's `postgres` database (tests create theirs from it).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the cluster (fast mode: open connections are cut) and waits until it
    /// accepts connections again.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "restart", "-o", &self.server_options()]);
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log_file(&self) -> String {
        self.dir.path().join("server.log").display().to_string()
    }

    // fsync off: the cluster is thrown away, and the suite shares two cores.
    fn server_options(&self) -> String {
        format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c max_connections=100",
            self.port,
            self.dir.path().display()
        )
    }

    fn pg_ctl(&self, args: &[&str]) {
        let (data, log) = (self.data_dir(), self.log_file());
        let mut all = vec!["-D", data.as_str(), "-w", "-l", log.as_str()];
        all.extend_from_slice(args);
        self.pg("pg_ctl", &all);
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let program = PathBuf::from(BIN_DIR).join(program);
        let output = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|error| panic!("run {}: {error}", program.display()));
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Immediate: nothing in it is worth a checkpoint. Errors are ignored (the test may
        // be unwinding); the temp dir is deleted afterwards either way.
        let data = self.data_dir();
        let args = ["-D", data.as_str(), "-w", "-m", "immediate", "stop"];
        let program = PathBuf::from(BIN_DIR).join("pg_ctl");
        let _ = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}

impl TestDatabase {
    /// A fresh database on the PostgreSQL server at `admin_url` (e.g. a [`PrivateCluster`]).
    pub async fn create_on_postgres(admin_url: String) -> Self {
        let backend = Backend::Postgres;
        let admin = Database::connect(&admin_url).await.unwrap_or_else(|error| {
            panic!("PostgreSQL at {admin_url} is required for the postgres tests: {error}")
        });
        let name = format!("enroll_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin_url);
        Self {
            url: format!("{base}/{name}"),
            backend,
            postgres_name: Some(name),
            admin_url,
            _dir: None,
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "chown the private cluster's dir to postgres"
    );
}

// A port the kernel hands out now; the cluster binds it a moment later (a race with
// other binds that is harmless in practice: starting fails loudly if it is lost).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
