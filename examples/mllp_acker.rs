//! A minimal MLLP receiver that acknowledges every message with AA (or AR
//! with an ERR segment when the message cannot be read), without storing
//! anything: a downstream system to point `switchboard send` or an outbound
//! operation at, and the network ceiling for benchmarks.
//!
//! ```text
//! cargo run --release --example mllp_acker -- 6661
//! ```

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use switchboard::hl7::{AckBuilder, AckCode, Message, check_header};
use switchboard::mllp::{MllpCodec, MllpFrame};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args().nth(1).map_or(Ok(6661), |p| p.parse())?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("acknowledging MLLP messages on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

async fn serve(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, MllpCodec::new());
    let idle = Duration::from_secs(300);
    while let Ok(Some(frame)) = tokio::time::timeout(idle, framed.next()).await {
        let MllpFrame::Message(payload) = frame? else { continue };
        let ack = match Message::parse(&payload) {
            Ok(msg) => match check_header(&msg) {
                Ok(()) => AckBuilder::new(&msg, AckCode::AA).build(),
                Err(e) => AckBuilder::new(&msg, AckCode::AR).text(e.to_string()).error(e.ack_error()).build(),
            },
            Err(e) => {
                eprintln!("unreadable message: {e}");
                continue;
            }
        };
        framed.send(&ack[..]).await?;
    }
    Ok(())
}
