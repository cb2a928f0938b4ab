//! The README's run command: the bundled demo productions start on a fresh
//! machine (creating their test certificates), take a message over MLLP,
//! pass it over the mutual-TLS hop to the lab system, and stop cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard::hl7::{Message, Reply};
use switchboard::mllp::MllpClient;

use crate::ports::free_port;

struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_delivers_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (adt_port, lab_port) = (free_port(), free_port());
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.yaml")).unwrap();
    assert!(demo.contains("port: 2575") && demo.contains("port: 6661"));
    let demo =
        demo.replace("port: 2575", &format!("port: {adt_port}")).replace("port: 6661", &format!("port: {lab_port}"));
    let config = dir.path().join("demo.yaml");
    std::fs::write(&config, demo).unwrap();

    let binary = env!("CARGO_BIN_EXE_switchboard");
    let check = Command::new(binary).args(["check", "--config"]).arg(&config).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let _engine = Engine(
        Command::new(binary)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pki = dir.path().join("demo-data/pki");
    wait_until("the test certificates", Duration::from_secs(10), || files_in(&pki).len() == 6);
    assert_eq!(files_in(&pki), ["ca.crt", "ca.key", "client.crt", "client.key", "server.crt", "server.key"]);

    let addr = format!("127.0.0.1:{adt_port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        match MllpClient::connect(&addr, Duration::from_secs(1)).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("the demo does not listen: {e}"),
        }
    };
    let adt = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/adt_a01.hl7")).unwrap();
    let ack = client.exchange(&adt, Duration::from_secs(5)).await.unwrap();
    let reply = Reply::read(&Message::parse(&ack).unwrap());
    assert!(reply.is_positive(), "{reply:?}");

    // Routed to the archive, and across the mutual-TLS hop to the lab inbox,
    // byte for byte.
    let inbox = dir.path().join("demo-data/lab-inbox");
    wait_until("the lab inbox", Duration::from_secs(10), || files_in(&inbox) == ["MSG00001.hl7"]);
    assert_eq!(std::fs::read(inbox.join("MSG00001.hl7")).unwrap(), adt);
    wait_until("the archive", Duration::from_secs(10), || files_in(&dir.path().join("demo-data/out")).len() == 1);

    // `switchboard send` speaks TLS too: with the demo's client
    // configuration the lab system accepts it; without a client certificate
    // the lab system (verify_peer: require) refuses the handshake.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/oru_r01_escapes.hl7");
    let port = lab_port.to_string();
    let send = |extra: &[&str]| {
        Command::new(binary)
            .args(["send", "--port", &port, "--timeout", "3s"])
            .args(extra)
            .arg(&fixture)
            .output()
            .unwrap()
    };
    let config_arg = config.display().to_string();
    let out = send(&["--tls-config", "lab-client", "--config", &config_arg]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("LAB778\tAA"));
    let ca = pki.join("ca.crt").display().to_string();
    let out = send(&["--ca", &ca]);
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("TLS") || text.contains("closed"), "{text}");
    // And the plaintext port still works after that.
    let ack = client.exchange(&adt, Duration::from_secs(5)).await.unwrap();
    assert!(Reply::read(&Message::parse(&ack).unwrap()).is_positive());
}
