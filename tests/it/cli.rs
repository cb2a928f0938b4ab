//! The `switchboard` command line, run as a user would: `parse` on the
//! fixtures, `send` against a real MLLP listener on loopback.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use futures_util::{SinkExt as _, StreamExt as _};
use switchboard::hl7::{AckBuilder, AckCode, Message};
use switchboard::mllp::{MllpCodec, MllpFrame};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

use crate::common;

fn switchboard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).output().unwrap()
}

/// Runs the binary with `input` on its standard input.
fn switchboard_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Runs the binary with standard output read through a pipe until its
/// first line, then closed, as `switchboard ... | head -1` does. `then`
/// runs once the pipe is closed. Returns the first line and the rest.
fn switchboard_head_1(args: &[&str], then: impl FnOnce()) -> (String, Output) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first).unwrap();
    }
    then();
    (first, child.wait_with_output().unwrap())
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn parse_prints_a_tree_with_paths_and_decoded_values() {
    let out = switchboard(&["parse", &fixture("valid/adt_a01.hl7")]);
    assert!(out.status.success());
    let text = stdout(&out);
    for line in ["MSH-9.2", "PID-3[2].1", "987-65-4320", "PV1-44", "20261128094000"] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let out = switchboard(&["parse", &fixture("valid/latin1_8859.hl7")]);
    assert!(stdout(&out).contains("Müller"));
}

#[test]
fn parse_json_is_structured() {
    let out = switchboard(&["parse", "--json", &fixture("valid/repetitions_subcomponents.hl7")]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = &json[0]["segments"][1];
    assert_eq!(pid["id"], "PID");
    // PID-3[2].4.2
    assert_eq!(pid["fields"][2]["repetitions"][1][3][1], "5.6.7.8");
    assert_eq!(json[0]["control_id"], "ORD-5");
}

#[test]
fn parse_reports_errors_with_file_and_position() {
    let out = switchboard(&["parse", &fixture("invalid/truncated_msh.hl7")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated_msh.hl7") && err.contains("byte 6"), "{err}");
    let out = switchboard(&["parse", "/nonexistent/file.hl7"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/file.hl7"));
}

#[test]
fn parse_reads_standard_input_for_a_dash() {
    let message = std::fs::read(fixture("valid/adt_a01.hl7")).unwrap();
    let out = switchboard_with_stdin(&["parse", "-"], &message);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), stdout(&switchboard(&["parse", &fixture("valid/adt_a01.hl7")])));
    let out = switchboard_with_stdin(&["parse", "-"], b"not HL7\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: <stdin>: "));
}

/// `parse` and `send` say the same about the same bad file: its name, the
/// message, the byte position in the file and what is wrong.
#[test]
fn parse_and_send_report_a_bad_file_in_the_same_words() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.hl7");
    std::fs::write(&garbage, "hello\nthis is not HL7\n").unwrap();
    let second_bad = dir.path().join("second_bad.hl7");
    std::fs::write(&second_bad, "MSH|^~\\&|A|B|C|D|20261128||ADT^A01|M1|P|2.5\rPID|1\r\nMSH|^~|\r").unwrap();
    let cases = [
        (&garbage, "message must start with an MSH segment, found \"hel\" at byte 0".to_owned()),
        (
            &second_bad,
            // Message 2 starts at byte 51; its header is cut short 6 bytes in.
            "message 2: MSH segment ends at byte 57 before its encoding characters are complete".to_owned(),
        ),
    ];
    // Nothing listens there: the file is refused before any connection.
    let closed = common::free_port().to_string();
    for (file, what) in cases {
        let file = file.display().to_string();
        let expected = format!("error: {file}: {what}");
        let parse = switchboard(&["parse", &file]);
        let send = switchboard(&["send", "--port", &closed, &file]);
        let (parse_err, send_err) =
            (String::from_utf8_lossy(&parse.stderr).into_owned(), String::from_utf8_lossy(&send.stderr).into_owned());
        assert!(parse_err.starts_with(&expected), "{parse_err}");
        assert_eq!(parse_err, send_err);
        assert_ne!(parse.status.code(), Some(0));
        assert_eq!(send.status.code(), Some(2));
        assert!(stdout(&send).is_empty());
    }
}

/// An MLLP listener that answers AA, or AE with a text when MSH-10 starts
/// with `NAK`; it runs until the test process ends.
fn start_acker() -> u16 {
    start_gated_acker(u32::MAX).0
}

/// Like [`start_acker`], but after the first `free` answers each answer
/// waits for a unit sent on the returned channel.
fn start_gated_acker(free: u32) -> (u16, tokio::sync::mpsc::UnboundedSender<()>) {
    let (release, gate) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gate = std::sync::Arc::new(tokio::sync::Mutex::new(gate));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (gate, answered) = (gate.clone(), answered.clone());
                tokio::spawn(async move {
                    let mut framed = Framed::new(stream, MllpCodec::new());
                    while let Some(Ok(MllpFrame::Message(payload))) = framed.next().await {
                        let n = answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= free && gate.lock().await.recv().await.is_none() {
                            break;
                        }
                        let msg = Message::parse(&payload).unwrap();
                        let nak = msg.control_id().unwrap().starts_with(b"NAK");
                        let ack = if nak {
                            AckBuilder::new(&msg, AckCode::AE).text("Date of birth in PID.7 must not be empty").build()
                        } else {
                            AckBuilder::new(&msg, AckCode::AA).build()
                        };
                        if framed.send(&ack[..]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
    (rx.recv().unwrap(), release)
}

fn write_message(dir: &Path, name: &str, control_id: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("MSH|^~\\&|A|B|C|D|20261128||ADT^A01|{control_id}|P|2.5\rPID|1||1^^^B^MR||X^Y\r"))
        .unwrap();
    path.display().to_string()
}

#[test]
fn send_prints_one_line_per_ack() {
    let port = start_acker().to_string();
    let out = switchboard(&["send", "--port", &port, &fixture("valid/adt_a01.hl7"), &fixture("valid/batch.hl7")]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("MSG00001\tAA\t"), "{text}");
    assert!(lines[1].starts_with("B1-1\tAA\t") && lines[2].starts_with("B1-2\tAA\t"), "{text}");
    assert!(lines[0].contains(" ms"));
}

/// Whatever line endings a file has, each segment goes out ended by one
/// CR, and nothing else: the file's final line ending neither goes missing
/// nor becomes an empty segment.
#[tokio::test]
async fn send_ends_every_segment_with_a_cr() {
    let receiver = common::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (msh, pid) =
        ("MSH|^~\\&|A|B|C|D|20261128||ADT^A01|{}|P|2.5", "PID|1||123456^^^HOSP^MR||DOE^JOHN^Q||19800101|F||X");
    let files = [
        ("lf", "\n", "\n"),
        ("crlf", "\r\n", "\r\n\r\n"),
        ("cr", "\r", "\r"),
        ("cr_no_end", "\r", ""),
        ("lf_no_end", "\n", ""),
    ];
    let mut paths = Vec::new();
    for (id, between, end) in files {
        let path = dir.path().join(format!("{id}.hl7"));
        std::fs::write(&path, format!("{}{between}{pid}{end}", msh.replace("{}", id))).unwrap();
        paths.push(path.display().to_string());
    }
    // The LF file: 95 bytes, as many as go out.
    assert_eq!(std::fs::metadata(dir.path().join("lf.hl7")).unwrap().len(), 95);
    let mut args = vec!["send".to_owned(), "--port".to_owned(), receiver.port.to_string()];
    args.extend(paths);
    let out = tokio::task::spawn_blocking(move || switchboard(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let received = receiver.messages();
    assert_eq!(received.len(), files.len());
    for ((id, _, _), (control_id, bytes)) in files.iter().zip(received) {
        assert_eq!(control_id, *id);
        let expected = format!("{}\r{pid}\r", msh.replace("{}", id));
        assert_eq!(String::from_utf8_lossy(&bytes), expected, "{id}");
    }
}

#[test]
fn send_reads_standard_input_for_a_dash() {
    let port = start_acker().to_string();
    let message = std::fs::read(fixture("valid/adt_a01.hl7")).unwrap();
    let out = switchboard_with_stdin(&["send", "--port", &port, "-"], &message);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("MSG00001\tAA\t"), "{}", stdout(&out));
}

/// `--concurrency` means something only in load mode: alone it is refused
/// rather than silently ignored.
#[test]
fn send_concurrency_needs_count() {
    let out = switchboard(&["send", "--concurrency", "4", &fixture("valid/adt_a01.hl7")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("required arguments were not provided") && err.contains("--count"), "{err}");
    assert!(stdout(&out).is_empty());
}

/// The help says what the columns are and where `send` sends by default.
#[test]
fn send_help_explains_the_columns_and_the_defaults() {
    let out = switchboard(&["send", "--help"]);
    let help = stdout(&out);
    for text in
        ["control id sent (MSH-10)", "(MSA-1", "round-trip time", "(MSA-3)", "[default: 2575]", "[default: 127.0.0.1]"]
    {
        assert!(help.contains(text), "{text} missing in\n{help}");
    }
}

/// `send ... | head -1`: the reader is gone before the second line is
/// written, and the command stops there without a panic or a word.
#[test]
fn send_stops_quietly_when_its_reader_closes_the_pipe() {
    let (port, release) = start_gated_acker(1);
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (write_message(dir.path(), "1.hl7", "ONE"), write_message(dir.path(), "2.hl7", "TWO"));
    let port = port.to_string();
    let (first, out) = switchboard_head_1(&["send", "--port", &port, "--timeout", "10s", &one, &two], || {
        // The second ACK comes only once the pipe is closed.
        release.send(()).unwrap();
    });
    assert!(first.starts_with("ONE\tAA\t"), "{first}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.as_ref()), (Some(0), ""));
}

/// `parse` on a file whose tree is far larger than a pipe holds.
#[test]
fn parse_stops_quietly_when_its_reader_closes_the_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.hl7");
    let message = std::fs::read(fixture("valid/adt_a01.hl7")).unwrap();
    std::fs::write(&file, message.repeat(2000)).unwrap();
    let (first, out) = switchboard_head_1(&["parse", &file.display().to_string()], || {});
    assert_eq!(first, "# message 1 (byte 0)\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.as_ref()), (Some(0), ""));
}

#[test]
fn send_fails_on_negative_ack_and_on_connection_error() {
    let port = start_acker().to_string();
    let dir = tempfile::tempdir().unwrap();
    let ok = write_message(dir.path(), "ok.hl7", "OK1");
    let nak = write_message(dir.path(), "nak.hl7", "NAK1");
    let out = switchboard(&["send", "--port", &port, &ok, &nak]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("NAK1\tAE\t") && text.contains("Date of birth in PID.7 must not be empty"), "{text}");

    // A port nobody listens on: one below the ephemeral range, which no
    // test binding port 0 can be handed meanwhile.
    let closed = common::free_port().to_string();
    let out = switchboard(&["send", "--port", &closed, "--timeout", "2s", &ok]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// A plain sender whose connection is closed before any reply (what a
/// TLS listener does with a plaintext frame) is told the peer may expect
/// TLS.
#[test]
fn send_says_the_peer_may_expect_tls_when_the_connection_closes_before_a_reply() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        // Reads what is sent, then hangs up without a word.
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 512];
            let _ = std::io::Read::read(&mut stream, &mut buf);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ok = write_message(dir.path(), "ok.hl7", "OK1");
    let out = switchboard(&["send", "--port", &port, "--timeout", "5s", &ok]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("OK1\terror\t") && text.contains("the peer may expect TLS"), "{text}");
}

#[test]
fn send_times_out_when_no_ack_comes() {
    // Accepts, reads, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let _hold = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(std::time::Duration::from_secs(5));
        drop(conn);
    });
    let out = switchboard(&["send", "--port", &port, "--timeout", "300ms", &fixture("valid/adt_a01.hl7")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("no reply within 300ms"), "{}", stdout(&out));
}

#[test]
fn send_load_mode_reports_throughput_and_latency() {
    let port = start_acker().to_string();
    let out = switchboard(&[
        "send",
        "--port",
        &port,
        "--count",
        "400",
        "--concurrency",
        "4",
        &fixture("valid/adt_a01.hl7"),
        &fixture("valid/oru_r01_escapes.hl7"),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sent 400 messages on 4 connection(s)"), "{text}");
    assert!(text.contains("400 positive, 0 negative, 0 errors"), "{text}");
    assert!(text.contains("throughput") && text.contains("p99"), "{text}");
}

/// The certificate warning period has one name for `run`, `check` and
/// `tls check`; `tls check` still takes its former `--warn-days`, without
/// showing it.
#[test]
fn tls_check_takes_the_warning_period_under_the_name_run_and_check_use() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "tls:\n  hop:\n    role: server\n    ca_file: pki/ca.crt\n    cert_file: pki/server.crt\n    \
                key_file: pki/server.key\n    create_if_missing: true\nproductions: {}\n";
    let file = dir.path().join("productions.yaml");
    std::fs::write(&file, yaml).unwrap();
    common::create_test_certificates(dir.path(), yaml);
    let file = file.display().to_string();
    let tls_check = |days: &[&str]| {
        let mut args = vec!["tls", "check", "--config", &file];
        args.extend(days);
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(&args)
            .env_remove("SWITCHBOARD_CERTIFICATE_WARNING_DAYS")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stdout(&out));
        stdout(&out)
    };
    // The test certificate is valid for far less than 100,000 days.
    let warned = tls_check(&["--certificate-warning-days", "100000"]);
    assert!(warned.contains("WARNING") && warned.contains("expires"), "{warned}");
    assert_eq!(tls_check(&["--warn-days", "100000"]), warned);
    assert!(!tls_check(&[]).contains("WARNING"));
    let out = switchboard(&["check", "--config", &file, "--certificate-warning-days", "100000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.hop: warning: "));
    let help = stdout(&switchboard(&["tls", "check", "--help"]));
    assert!(help.contains("--certificate-warning-days") && !help.contains("warn-days"), "{help}");
}

/// `switchboard run` as a child process whose log lines (standard error)
/// arrive on a channel; killed if the test ends before it stops.
struct Running {
    child: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("run")
            .args(args)
            .current_dir(dir)
            .env_remove("SWITCHBOARD_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, log }
    }

    /// The first log line that contains `text`, within 10 seconds.
    fn wait_for(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run from another directory with relative paths: `--data-dir` is taken
/// from the directory the command runs in, the `ready` line says where
/// that is in full, and SIGTERM stops the engine gracefully.
#[test]
fn run_logs_its_absolute_store_path_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    let port = common::free_port();
    let yaml = format!(
        "productions:\n  adt:\n    items:\n      - name: In\n        kind: mllp_in\n        host: 127.0.0.1\n        \
         port: {port}\n        targets: [Out]\n      - name: Out\n        kind: file_out\n        path: out\n"
    );
    std::fs::write(dir.path().join("conf/productions.yaml"), yaml).unwrap();
    let engine = Running::start(dir.path(), &["--config", "conf/productions.yaml", "--data-dir", "data"]);
    let ready = engine.wait_for("ready");
    let store = dir.path().canonicalize().unwrap().join("data/switchboard.db");
    assert!(ready.contains(&format!("store={}", store.display())), "{ready}");
    assert!(store.exists());

    // Paths inside the productions file are taken from its folder.
    let message = fixture("valid/adt_a01.hl7");
    let out = switchboard(&["send", "--port", &port.to_string(), &message]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out_dir = dir.path().join("conf/out");
    let files = || std::fs::read_dir(&out_dir).map_or(0, Iterator::count);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files() == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing in {}", out_dir.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let mut engine = engine;
    let term = Command::new("kill").args(["-TERM", &engine.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    engine.wait_for("stopped");
    assert!(engine.child.wait().unwrap().success());
}

/// A SIGTERM while the engine is still starting (the store is open, the
/// productions are not running yet) stops it gracefully once started,
/// rather than killing it midway.
#[test]
fn run_stops_gracefully_on_a_sigterm_during_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "productions:\n  adt:\n    items:\n      - name: Out\n        kind: file_out\n        path: out\n";
    std::fs::write(dir.path().join("productions.yaml"), yaml).unwrap();
    let mut engine = Running::start(dir.path(), &["--config", "productions.yaml", "--data-dir", "data"]);
    let opened = dir.path().join("data/switchboard.db-inbound-1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !opened.exists() {
        assert!(std::time::Instant::now() < deadline, "the store was not opened");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let term = Command::new("kill").args(["-TERM", &engine.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    engine.wait_for("stopped");
    assert!(engine.child.wait().unwrap().success());
}

/// A message that no rule matches is logged by its control id (MSH-10),
/// which the sender knows it by, and without its content.
#[test]
fn run_names_a_message_no_rule_matched_by_its_control_id() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let yaml = format!(
        "productions:\n  adt:\n    items:\n      - name: In\n        kind: mllp_in\n        host: 127.0.0.1\n        \
         port: {port}\n        targets: [Router]\n      - name: Router\n        kind: router\n        rules:\n          \
         - when: MSH-9.1 = \"ORU\"\n            send: [Out]\n      - name: Out\n        kind: file_out\n        \
         path: out\n"
    );
    std::fs::write(dir.path().join("productions.yaml"), yaml).unwrap();
    let engine = Running::start(dir.path(), &["--config", "productions.yaml", "--data-dir", "data"]);
    engine.wait_for("ready");
    let out = switchboard(&["send", "--port", &port.to_string(), &fixture("valid/adt_a01.hl7")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let warning = engine.wait_for("no rule matched");
    assert!(warning.contains("control_id=\"MSG00001\""), "{warning}");
    assert!(!warning.contains("DOE"), "{warning}");
}

/// A web port that another program holds stops `run` before any
/// production has started (no message taken in and then abandoned), with
/// one line that names the address and the fix.
#[test]
fn run_stops_before_any_production_starts_when_the_web_port_is_held() {
    let web_port = common::free_port();
    let _held = std::net::TcpListener::bind(("127.0.0.1", web_port)).unwrap();
    let mllp_port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "productions:\n  adt:\n    items:\n      - name: In\n        kind: mllp_in\n        host: 127.0.0.1\n        \
         port: {mllp_port}\n        targets: [Out]\n      - name: Out\n        kind: file_out\n        path: out\n"
    );
    std::fs::write(dir.path().join("productions.yaml"), yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .current_dir(dir.path())
        .args(["run", "--config", "productions.yaml", "--data-dir", "data", "--web-port", &web_port.to_string()])
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("SWITCHBOARD_OPTIONS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.contains(&format!("cannot listen on 127.0.0.1:{web_port}")), "{stderr}");
    assert!(error.contains("choose another port"), "{error}");
    assert_eq!(error.matches("Address already in use").count(), 1, "the reason once: {error}");
    let started = stderr.lines().any(|l| l.contains(" ready ") || l.contains(" listening "));
    assert!(!started, "no production started: {stderr}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", mllp_port)).is_ok(), "the MLLP port was never taken");
}

#[test]
fn check_warns_about_a_port_another_program_holds() {
    // A port below the ephemeral range: released, it must stay free, and one
    // in that range can be taken at once as the local port of a connection
    // (of this process or any other).
    let port = common::free_port();
    let held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("productions.yaml");
    let yaml = format!(
        "productions:\n  adt:\n    items:\n      - name: In\n        kind: mllp_in\n        host: 127.0.0.1\n        \
         port: {port}\n        targets: [Out]\n      - name: Out\n        kind: file_out\n        path: out\n"
    );
    std::fs::write(&file, yaml).unwrap();
    let out = switchboard(&["check", "--config", &file.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    // A warning: the listener waits for the port.
    assert!(out.status.success(), "{err}");
    let warning = format!("warning: {}: productions.adt.items[0].port: cannot listen on port {port}", file.display());
    assert!(err.contains(&warning), "{err}");
    assert!(err.contains("stop it or choose another port"), "{err}");
    assert!(stdout(&out).contains(": OK ("), "{}", stdout(&out));
    drop(held);
    let out = switchboard(&["check", "--config", &file.display().to_string()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}
