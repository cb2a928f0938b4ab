//! Times the store's searches for the message viewer on a large store:
//! builds one of `--messages` received messages (a million by default)
//! through the public `Store` API, the first time, then runs each query
//! `--rounds` times and prints a markdown table (median and max
//! milliseconds). `benches/search/run.sh` builds and runs it.
//!
//! ```text
//! cargo run --release --example search_bench -- --dir /tmp/search-bench
//! cargo run --release --example search_bench -- --dir /tmp/search-bench --messages 100000 --rounds 3
//! ```
//!
//! The store: two productions. `ADT in` receives ADT^A01 (40 %), ADT^A08
//! (25 %), SIU^S12 (4 %) and MDM^T02 (1 %); `Lab in` ORU^R01 (20 %) and
//! ORM^O01 (10 %). A router decides on receipt: ADT to `EMR out` and
//! `Billing out` (1 % discarded, no rule matched), SIU to `Scheduling out`,
//! MDM and ORU to `EMR out`, ORM to `LIS out`, and 0.1 % of lab messages
//! also to `Research out`. 200,000 patients, 40 family names. Deliveries
//! end completed, 0.05 % failed and 0.05 % suspended; the newest 2,000 of
//! each operation stay queued. One message in 10,000 holds the word
//! `ZEBRAFINCH`. 20,000 events.
//!
//! Nothing goes over the network; the store lives in `--dir` and is kept
//! for the next run (delete the folder to build it again).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use switchboard::store::{
    Durability, Event, EventLevel, EventQuery, Finished, InlineRoute, MessagePage, MessageQuery, NewInbound,
    RouteDecision, RoutedOutput, Status, Store, StoreOptions,
};

const USAGE: &str = "usage: search_bench --dir DIR [--messages N] [--rounds R]";

const SURNAMES: [&str; 40] = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "SMITHERS",
];
const WORDS: [&str; 8] = ["GLUCOSE", "SODIUM", "POTASSIUM", "CHLORIDE", "UREA", "CREATININE", "CALCIUM", "ALBUMIN"];
/// Messages left queued at the end of each operation's queue.
const BACKLOG: u64 = 2_000;
const OPERATIONS: [(&str, &str); 6] = [
    ("adt", "EMR out"),
    ("adt", "Billing out"),
    ("adt", "Scheduling out"),
    ("lab", "EMR out"),
    ("lab", "LIS out"),
    ("lab", "Research out"),
];

struct Args {
    dir: PathBuf,
    messages: u64,
    rounds: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args { dir: PathBuf::new(), messages: 1_000_000, rounds: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--dir" => args.dir = PathBuf::from(value()?),
            "--messages" => args.messages = value()?.parse().context("--messages")?,
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            _ => bail!("unknown argument {arg:?}; {USAGE}"),
        }
    }
    if args.dir.as_os_str().is_empty() || args.messages == 0 || args.rounds == 0 {
        bail!("{USAGE}");
    }
    Ok(args)
}

/// A fixed mix: the same store every time.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn patient_id(n: u64) -> String {
    format!("MRN{:07}", (mix(n) >> 20) % 200_000)
}

/// Message `n` as its service receives it, with the router's decision.
fn message(n: u64) -> NewInbound {
    let h = mix(n);
    let kind = match h % 1000 {
        0..400 => "ADT^A01",
        400..650 => "ADT^A08",
        650..850 => "ORU^R01",
        850..950 => "ORM^O01",
        950..990 => "SIU^S12",
        _ => "MDM^T02",
    };
    let lab = kind.starts_with("OR");
    let (pid, name) = (patient_id(n), SURNAMES[((h >> 40) % SURNAMES.len() as u64) as usize]);
    let control = format!("CTL{n:08}");
    let word = WORDS[((h >> 8) % WORDS.len() as u64) as usize];
    let note = if (h >> 24).is_multiple_of(10_000) { "ZEBRAFINCH sighting" } else { "within normal limits" };
    let mut body = format!(
        "MSH|^~\\&|SENDER|HOSP|SWB|HOSP|20261205120000||{kind}|{control}|P|2.5\r\
         EVN|A01|20261205120000\r\
         PID|1||{pid}^^^HOSP^MR||{name}^ALEX^J||19700101|F|||1 MAIN ST^^CITY^ST^12345\r\
         PV1|1|I|W1^101^A|||||||MED\r"
    );
    if lab {
        for i in 1..4 {
            body.push_str(&format!("OBX|{i}|NM|{word}^{word}||{}|mmol/L|||||F\r", 100 + (h >> (i * 4)) % 50));
        }
    }
    body.push_str(&format!("NTE|1||{note}\r"));
    let out = |target: &str| RoutedOutput { target: target.into(), body: None, control_id: None };
    let (status, error, outputs) = match kind {
        "ADT^A01" | "ADT^A08" if (h >> 50).is_multiple_of(100) => {
            (Status::Discarded, Some("no rule matched".into()), vec![])
        }
        "ADT^A01" | "ADT^A08" => (Status::Completed, None, vec![out("EMR out"), out("Billing out")]),
        "SIU^S12" => (Status::Completed, None, vec![out("Scheduling out")]),
        "ORM^O01" => (Status::Completed, None, vec![out("LIS out")]),
        _ if lab && (h >> 52).is_multiple_of(1000) => {
            (Status::Completed, None, vec![out("EMR out"), out("Research out")])
        }
        _ => (Status::Completed, None, vec![out("EMR out")]),
    };
    NewInbound {
        production: if lab { "lab" } else { "adt" }.into(),
        service: if lab { "Lab in" } else { "ADT in" }.into(),
        origin: "10.0.0.7:40112".into(),
        body: Bytes::from(body),
        control_id: Some(control),
        message_type: Some(kind.into()),
        patient_id: Some(pid),
        patient_name: Some(name.into()),
        targets: ["Router".to_owned()].into(),
        routed: vec![InlineRoute { router: "Router".into(), decision: RouteDecision { status, error, outputs } }],
    }
}

async fn build(store: &Store, messages: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let tasks = 64;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut n = task;
            while n < messages {
                store.commit_inbound(message(n)).await?;
                n += tasks;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    eprintln!("{messages} messages received in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let mut delivered = 0u64;
    for (production, item) in OPERATIONS {
        while store.queue_depth(production, item) > BACKLOG {
            let batch = store.fetch_queue(production, item, 1000)?;
            let take = (store.queue_depth(production, item) - BACKLOG).min(batch.len() as u64) as usize;
            let results = batch[..take].iter().map(|q| {
                let h = mix(q.id as u64 ^ 0x5555);
                let status = match h % 10_000 {
                    0..5 => Status::Error,
                    5..10 => Status::Suspended,
                    _ => Status::Completed,
                };
                let reply = (status != Status::Completed || h.is_multiple_of(100)).then(|| {
                    Bytes::from_static(b"MSH|^~\\&|EMR|HOSP|SWB|HOSP|20261205120001||ACK^A01|A1|P|2.5\rMSA|AA|X\r")
                });
                let error = (status != Status::Completed).then(|| "the receiver answered AE: unknown patient".into());
                let finished = Finished {
                    header_id: q.id,
                    production: production.into(),
                    item: item.into(),
                    status,
                    attempts: 1,
                    reply,
                    error,
                };
                store.finish(finished)
            });
            for result in futures_util::future::join_all(results).await {
                result?;
            }
            delivered += take as u64;
        }
    }
    // A few being delivered.
    let taking: Vec<i64> = store.fetch_queue("adt", "EMR out", 10)?.iter().map(|q| q.id).collect();
    store.mark_delivering(taking).await?;
    eprintln!("{delivered} deliveries finished in {:.1} s", started.elapsed().as_secs_f64());
    for n in 0..20_000u64 {
        let level = match mix(n) % 100 {
            0 => EventLevel::Error,
            1..10 => EventLevel::Warning,
            _ => EventLevel::Info,
        };
        let production = if n.is_multiple_of(3) { "lab" } else { "adt" };
        let event = Event {
            level,
            production: Some(production.into()),
            item: Some(if n.is_multiple_of(2) { "EMR out" } else { "Router" }.into()),
            kind: "bench".into(),
            text: format!("event {n}"),
        };
        if n % 1000 == 999 { store.record_event(event).await? } else { store.log_event(event) }
    }
    Ok(())
}

/// Milliseconds of each call, sorted.
fn timed(rounds: usize, mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        call()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn row(name: &str, what: &str, times: &[f64]) {
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!("| {name} | {what} | {median:.1} | {max:.1} |");
}

fn describe(page: &MessagePage) -> String {
    let next = if page.next.is_some() { "next" } else { "end" };
    format!("{} rows, {} examined, {next}", page.messages.len(), page.scanned)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let built = args.dir.join(format!("built-{}", args.messages));
    if !built.exists() && args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).context("clearing the store folder")?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let options = StoreOptions { durability: Durability::Normal, low_background_priority: false };
    let (store, _) = Store::open(&args.dir.join("store.db"), options)?;
    if !built.exists() {
        build(&store, args.messages).await?;
        std::fs::write(&built, b"")?;
    }
    let newest = store.search_messages(&MessageQuery::default(), None, 1)?;
    let headers = newest.messages.first().map_or(0, |m| m.id);
    println!(
        "{} received messages, {headers} headers, store {} MB; {} rounds per query, limit 50\n",
        args.messages,
        store.size_on_disk() >> 20,
        args.rounds
    );
    println!("| query | result (last round) | median ms | max ms |");
    println!("| --- | --- | ---: | ---: |");
    let q = |edit: &dyn Fn(&mut MessageQuery)| {
        let mut q = MessageQuery::default();
        edit(&mut q);
        q
    };
    let at = |n: u64| -> anyhow::Result<i64> {
        let q = q(&|q| q.control_id = Some(format!("CTL{n:08}")));
        let page = store.search_messages(&q, None, 1)?;
        page.messages.first().map(|m| m.created_at).context("a message of the store")
    };
    let (from, to) = (at(args.messages * 40 / 100)?, at(args.messages * 45 / 100)?);
    let s = |v: &str| Some(v.to_owned());
    let queries: Vec<(&str, MessageQuery)> = vec![
        ("newest, no filter", MessageQuery::default()),
        ("time range (5 % of the store, in its middle)", q(&|q| (q.from, q.to) = (Some(from), Some(to)))),
        ("status error (0.05 % of deliveries)", q(&|q| q.status = Some(Status::Error))),
        ("status suspended", q(&|q| q.status = Some(Status::Suspended))),
        ("status queued (the backlog)", q(&|q| q.status = Some(Status::Queued))),
        ("status completed", q(&|q| q.status = Some(Status::Completed))),
        ("status discarded (1 % of ADT)", q(&|q| q.status = Some(Status::Discarded))),
        ("item EMR out", q(&|q| q.item = s("EMR out"))),
        ("item Scheduling out (4 %)", q(&|q| q.item = s("Scheduling out"))),
        ("item Research out (0.03 %, first step)", q(&|q| q.item = s("Research out"))),
        ("message type ADT (prefix)", q(&|q| q.message_type = s("ADT"))),
        ("message type MDM^T02 (1 %)", q(&|q| q.message_type = s("MDM^T02"))),
        (
            "control id (a message a third of the way in)",
            q(&|q| q.control_id = Some(format!("CTL{:08}", args.messages / 3))),
        ),
        ("control id that does not exist", q(&|q| q.control_id = s("NOSUCH"))),
        ("patient id (PID-3)", q(&|q| q.patient_id = Some(patient_id(args.messages / 7)))),
        ("patient name prefix smi", q(&|q| q.patient_name = s("smi"))),
        ("item EMR out + status error", q(&|q| (q.item, q.status) = (s("EMR out"), Some(Status::Error)))),
        (
            "production lab + type ORU + patient",
            q(&|q| {
                (q.production, q.message_type, q.patient_id) =
                    (s("lab"), s("ORU"), Some(patient_id(args.messages / 5 + 1)));
            }),
        ),
        ("text GLUCOSE (common)", q(&|q| q.text = s("GLUCOSE"))),
        ("text ZEBRAFINCH (0.01 %, first step)", q(&|q| q.text = s("ZEBRAFINCH"))),
        ("text NOTHERE (first step)", q(&|q| q.text = s("NOTHERE"))),
        ("text GLUCOSE + item LIS out", q(&|q| (q.text, q.item) = (s("GLUCOSE"), s("LIS out")))),
    ];
    for (name, query) in &queries {
        let mut last = MessagePage::default();
        let times = timed(args.rounds, || {
            last = store.search_messages(query, None, 50)?;
            Ok(())
        })?;
        row(name, &describe(&last), &times);
        if let Some(next) = last.next
            && (last.messages.len() < 50 || name.starts_with("status completed"))
        {
            // The next step, as "search further" or the next page asks it.
            let times = timed(args.rounds, || {
                last = store.search_messages(query, Some(next), 50)?;
                Ok(())
            })?;
            row(&format!("{name}: the step after"), &describe(&last), &times);
        }
    }
    let detail_id = headers / 2;
    let mut trace = 0;
    let times = timed(args.rounds, || {
        trace = store.message_detail(detail_id)?.map_or(0, |d| d.trace.len());
        Ok(())
    })?;
    row("message detail (body, reply, trace)", &format!("trace of {trace}"), &times);
    let mut counts = Vec::new();
    let times = timed(args.rounds, || {
        counts = store.counts_by_status()?;
        Ok(())
    })?;
    let total: u64 = counts.iter().map(|c| c.1).sum();
    row("counts by status", &format!("{total} headers"), &times);
    let mut resendable = 0;
    let times = timed(args.rounds, || {
        resendable = store.count_resendable("adt", "EMR out")?;
        Ok(())
    })?;
    row("count resendable (adt, EMR out)", &format!("{resendable}"), &times);
    for (name, query) in [
        ("events, newest", EventQuery::default()),
        (
            "events, errors of EMR out",
            EventQuery { level: Some(EventLevel::Error), item: s("EMR out"), ..EventQuery::default() },
        ),
    ] {
        let mut found = 0;
        let times = timed(args.rounds, || {
            found = store.events(&query, None, 50)?.events.len();
            Ok(())
        })?;
        row(name, &format!("{found} rows"), &times);
    }
    store.close().await;
    Ok(())
}
