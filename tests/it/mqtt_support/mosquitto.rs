//! A real Mosquitto for the tests that need the broker Home Assistant
//! installs: found on the `PATH` (or in the `sbin` folders), started on
//! free ports of 127.0.0.1 with a password file and a TLS listener, and
//! killed when the test ends. Without a `mosquitto` binary a test says so
//! and does nothing, unless `SWITCHBOARD_TEST_REQUIRE_MOSQUITTO` is set
//! (`.ci/run` installs Mosquitto and sets it, so that CI cannot skip).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard::tls::pki::{CertificateAuthority, CertificateRequest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::free_port;

/// The user the password file admits.
pub(crate) const USER: &str = "switchboard";
/// Its password.
pub(crate) const PASSWORD: &str = "Mosquitto-Pa55word";

/// A program on the `PATH` or in the usual `sbin` folders.
pub(crate) fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Kills the broker when the test ends, however it ends.
pub(crate) struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Mosquitto with a password file (`mosquitto_passwd -c -b`), a plain listener and a TLS
/// listener; returns it with the two ports.
pub(crate) async fn start_mosquitto(mosquitto: &Path, passwd: &Path, dir: &Path) -> (Mosquitto, u16, u16) {
    let password_file = dir.join("passwd");
    let status = Command::new(passwd)
        .args(["-c", "-b"])
        .arg(&password_file)
        .args([USER, PASSWORD])
        .stdout(Stdio::null())
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd failed");

    let (ca, ca_files) = CertificateAuthority::new_root("Mosquitto test CA", 30, Default::default()).expect("CA");
    let mut request = CertificateRequest::new("localhost", 30);
    request.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into()];
    let server = ca.issue(&request).expect("server certificate");
    std::fs::write(dir.join("ca.pem"), &ca_files.cert_pem).unwrap();
    server.write(&dir.join("server.pem"), &dir.join("server.key"), true).unwrap();

    let (plain, tls) = (free_port(), free_port());
    // Running as root, Mosquitto would switch to its own user, which cannot
    // read the test's private folder.
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let config = format!(
        "{user}per_listener_settings false
allow_anonymous false
password_file {passwords}
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
listener {plain} 127.0.0.1
listener {tls} 127.0.0.1
certfile {cert}
keyfile {key}
",
        user = if root { "user root\n" } else { "" },
        passwords = password_file.display(),
        cert = dir.join("server.pem").display(),
        key = dir.join("server.key").display(),
    );
    std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
    let broker = restart_mosquitto(mosquitto, dir, &[plain, tls]).await;
    (broker, plain, tls)
}

/// Starts Mosquitto with the configuration [`start_mosquitto`] wrote in
/// `dir` (again, after it was killed: the same ports, the password file as
/// it is now, no retained message, since persistence is off).
pub(crate) async fn restart_mosquitto(mosquitto: &Path, dir: &Path, ports: &[u16]) -> Mosquitto {
    let child = Command::new(mosquitto)
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mosquitto");
    let broker = Mosquitto(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    for &port in ports {
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "mosquitto does not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    broker
}

impl Mosquitto {
    /// Kills the broker at once (SIGKILL): no goodbye to its clients.
    pub(crate) fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Makes it read its password file again (SIGHUP).
    pub(crate) fn reload(&self) {
        let status = Command::new("kill").args(["-HUP", &self.0.id().to_string()]).status().expect("kill -HUP");
        assert!(status.success(), "kill -HUP mosquitto");
    }
}

/// Sets `user`'s password in the password file of the broker in `dir`
/// (adding the user if needed); the broker reads it at its next start or
/// [`Mosquitto::reload`].
pub(crate) fn set_password(passwd: &Path, dir: &Path, user: &str, password: &str) {
    let status = Command::new(passwd)
        .arg("-b")
        .arg(dir.join("passwd"))
        .args([user, password])
        .stdout(Stdio::null())
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd -b failed");
}

/// Mosquitto and `mosquitto_passwd`, or `None` (after saying that `what`
/// did not run) when they are not installed; fails instead when
/// `SWITCHBOARD_TEST_REQUIRE_MOSQUITTO` is set.
pub(crate) fn mosquitto_or_skip(what: &str) -> Option<(PathBuf, PathBuf)> {
    if let (Some(mosquitto), Some(passwd)) = (find("mosquitto"), find("mosquitto_passwd")) {
        return Some((mosquitto, passwd));
    }
    assert!(
        std::env::var_os("SWITCHBOARD_TEST_REQUIRE_MOSQUITTO").is_none(),
        "mosquitto is not installed but SWITCHBOARD_TEST_REQUIRE_MOSQUITTO is set"
    );
    eprintln!("SKIPPED: mosquitto is not installed (apt-get install -y mosquitto); {what} did not run");
    None
}

/// Kills a child process when the test ends, however it ends.
pub(crate) struct KillOnDrop(pub(crate) Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
