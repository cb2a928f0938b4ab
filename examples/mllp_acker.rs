//! A minimal MLLP receiver that acknowledges every message with AA (or AR
//! with an ERR segment when the message cannot be read): a downstream system
//! to point `switchboard send` or an outbound operation at, and the reference
//! the engine's benchmarks are measured against.
//!
//! ```text
//! cargo run --release --example mllp_acker -- 6661
//! cargo run --release --example mllp_acker -- --port 6661 --mode group --file /tmp/acker.log
//! ```
//!
//! `--mode` chooses what happens between a message and its ACK:
//!
//! - `none` (default): nothing; the ACK is sent at once. The network ceiling.
//! - `fsync`: the message is appended to `--file` and the file is
//!   fdatasynced before the ACK, one sync per message (the naive durable
//!   floor). Messages of all connections go through one lock, so no sync is
//!   ever shared.
//! - `group`: messages of all connections are appended to `--file` by one
//!   writer thread that takes everything pending, writes it, fdatasyncs once
//!   and then releases all the ACKs waiting for that sync (group commit: the
//!   disk ceiling).
//!
//! `--expect N` prints one line when the N-th message has arrived: the wall
//! clock times (Unix milliseconds) of the first and the last message and how
//! many arrived out of order. Control ids of the form `<prefix><number>`
//! (what `switchboard send --count` sends: `SB<run><n>`) are checked per
//! prefix: a message whose number is below the highest already seen counts
//! as out of order. `--ids PATH` also writes every control id, one a line, in
//! arrival order, when the N-th message has arrived.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use switchboard::hl7::{AckBuilder, AckCode, Message, check_header};
use switchboard::mllp::{MllpCodec, MllpFrame};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

const USAGE: &str = "usage: mllp_acker [PORT] [--port PORT] [--mode none|fsync|group] [--file PATH] \
                     [--expect N] [--ids PATH]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    None,
    Fsync,
    Group,
}

struct Args {
    port: u16,
    mode: Mode,
    file: Option<PathBuf>,
    expect: Option<u64>,
    ids: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { port: 6661, mode: Mode::None, file: None, expect: None, ids: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--port" => args.port = value("--port")?.parse()?,
            "--mode" => {
                args.mode = match value("--mode")?.as_str() {
                    "none" => Mode::None,
                    "fsync" => Mode::Fsync,
                    "group" => Mode::Group,
                    other => bail!("unknown mode {other:?}: use none, fsync or group"),
                }
            }
            "--file" => args.file = Some(value("--file")?.into()),
            "--expect" => args.expect = Some(value("--expect")?.parse()?),
            "--ids" => args.ids = Some(value("--ids")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            port if !port.starts_with('-') => args.port = port.parse().with_context(|| USAGE.to_owned())?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.mode != Mode::None && args.file.is_none() {
        bail!("--mode fsync and --mode group need --file PATH");
    }
    Ok(args)
}

/// Where a message goes before it is acknowledged.
#[derive(Clone)]
enum Sink {
    None,
    /// One write and one fdatasync per message, under one lock.
    Fsync(Arc<Mutex<File>>),
    /// Handed to the group writer thread, which answers after its sync.
    Group(mpsc::UnboundedSender<(Vec<u8>, oneshot::Sender<std::io::Result<()>>)>),
}

impl Sink {
    async fn persist(&self, payload: &[u8]) -> std::io::Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Fsync(file) => {
                let (file, record) = (file.clone(), record(payload));
                tokio::task::spawn_blocking(move || {
                    let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    file.write_all(&record)?;
                    file.sync_data()
                })
                .await
                .map_err(std::io::Error::other)?
            }
            Self::Group(tx) => {
                let (done, wait) = oneshot::channel();
                tx.send((record(payload), done)).map_err(|_| std::io::Error::other("the writer has stopped"))?;
                wait.await.map_err(|_| std::io::Error::other("the writer has stopped"))?
            }
        }
    }
}

/// A message as appended to the file: its bytes and a line feed.
fn record(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(payload.len() + 1);
    record.extend_from_slice(payload);
    record.push(b'\n');
    record
}

/// The group commit writer: takes everything pending, writes it in one
/// call, fdatasyncs once, then answers every message of the batch.
fn group_writer(mut file: File, mut rx: mpsc::UnboundedReceiver<(Vec<u8>, oneshot::Sender<std::io::Result<()>>)>) {
    let mut buffer = Vec::new();
    let mut waiting = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some((record, done)) = next {
            buffer.extend_from_slice(&record);
            waiting.push(done);
            next = rx.try_recv().ok();
        }
        let result = file.write_all(&buffer).and_then(|()| file.sync_data());
        buffer.clear();
        for done in waiting.drain(..) {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Arrival count, order check and the control ids seen.
#[derive(Default)]
struct Tally {
    received: u64,
    first_ms: u128,
    out_of_order: u64,
    highest: HashMap<String, u128>,
    ids: Vec<String>,
}

impl Tally {
    fn arrived(&mut self, control_id: &str, keep_ids: bool) {
        let now = unix_ms();
        if self.received == 0 {
            self.first_ms = now;
        }
        self.received += 1;
        let digits = control_id.len() - control_id.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (prefix, number) = control_id.split_at(digits);
        if let Ok(number) = number.parse::<u128>() {
            let highest = self.highest.entry(prefix.to_owned()).or_insert(0);
            if number < *highest {
                self.out_of_order += 1;
            }
            *highest = (*highest).max(number);
        }
        if keep_ids {
            self.ids.push(control_id.to_owned());
        }
    }
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

struct Shared {
    sink: Sink,
    tally: Mutex<Tally>,
    expect: Option<u64>,
    ids: Option<PathBuf>,
}

impl Shared {
    /// Counts a message; at the expected count, prints the summary and
    /// writes the control ids.
    fn count(&self, control_id: &str) {
        if self.expect.is_none() {
            return;
        }
        let mut tally = self.tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tally.arrived(control_id, self.ids.is_some());
        if Some(tally.received) != self.expect {
            return;
        }
        println!(
            "received {} messages: first_ms={} last_ms={} out_of_order={}",
            tally.received,
            tally.first_ms,
            unix_ms(),
            tally.out_of_order
        );
        if let Some(path) = &self.ids {
            let text: String = tally.ids.iter().map(|id| format!("{id}\n")).collect();
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
        let _ = std::io::stdout().flush();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let open = |path: &PathBuf| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    let sink = match (args.mode, &args.file) {
        (Mode::Fsync, Some(path)) => Sink::Fsync(Arc::new(Mutex::new(open(path)?))),
        (Mode::Group, Some(path)) => {
            let file = open(path)?;
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::Builder::new().name("group-writer".into()).spawn(move || group_writer(file, rx))?;
            Sink::Group(tx)
        }
        _ => Sink::None,
    };
    let shared =
        Arc::new(Shared { sink, tally: Mutex::new(Tally::default()), expect: args.expect, ids: args.ids.clone() });
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    eprintln!("acknowledging MLLP messages on {} (mode {:?})", listener.local_addr()?, args.mode);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &shared).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
    let received = shared.tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner).received;
    if args.expect.is_some() {
        eprintln!("stopped after {received} messages");
    }
    Ok(())
}

async fn serve(stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, MllpCodec::new());
    let idle = Duration::from_secs(300);
    while let Ok(Some(frame)) = tokio::time::timeout(idle, framed.next()).await {
        let MllpFrame::Message(payload) = frame? else { continue };
        let msg = match Message::parse(&payload) {
            Ok(msg) => msg,
            Err(e) => {
                eprintln!("unreadable message: {e}");
                continue;
            }
        };
        let ack = match check_header(&msg) {
            Ok(()) => {
                shared.sink.persist(&payload).await?;
                let control_id = msg.control_id().map(|v| msg.decode(v).into_owned()).unwrap_or_default();
                shared.count(&control_id);
                AckBuilder::new(&msg, AckCode::AA).build()
            }
            Err(e) => AckBuilder::new(&msg, AckCode::AR).text(e.to_string()).error(e.ack_error()).build(),
        };
        framed.send(&ack[..]).await?;
    }
    Ok(())
}
