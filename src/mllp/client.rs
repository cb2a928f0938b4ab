//! A minimal MLLP client: send one message, wait for the one reply; or
//! send several ahead and read their replies in order.
//!
//! Used by `switchboard send` and by outbound operations. Generic over the
//! stream so that a TLS stream can be used in place of TCP.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt as _};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::codec::Framed;

use super::{MllpCodec, MllpError, MllpFrame};

/// Why an exchange failed. None of the variants carries message content.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port` as given.
        addr: String,
        /// The operating system's reason.
        reason: io::Error,
    },
    /// Opening the connection took longer than the timeout.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// `host:port` as given.
        addr: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// The TLS handshake failed (untrusted certificate, wrong host name,
    /// rejected client certificate, ...).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// `host:port` as given.
        addr: String,
        /// The reason rustls gives.
        reason: io::Error,
    },
    /// The peer ended the TLS session with an error after the handshake
    /// seemed complete. With TLS 1.3 a server checks the client's
    /// certificate after the client has finished its part of the handshake,
    /// so a refused certificate shows here, at the first read, as a fatal
    /// alert (`CertificateRequired`, `UnknownCA`, ...).
    #[error("the peer ended the TLS session: {0}")]
    TlsSession(io::Error),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    ReplyTimeout(Duration),
    /// The peer did not take what was sent within the timeout (it stopped
    /// reading, and the connection's buffers are full).
    #[error("the peer did not take the messages sent within {0:?}")]
    SendTimeout(Duration),
    /// The peer closed the connection before replying.
    #[error("the peer closed the connection before replying")]
    Closed,
    /// The peer sent data on a connection where no reply was awaited.
    #[error("the peer sent data that nobody asked for")]
    Unsolicited,
    /// The reply was larger than the frame limit.
    #[error("the reply of {len} bytes exceeds the frame limit")]
    OversizedReply {
        /// Its size.
        len: usize,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Mllp(#[from] MllpError),
}

/// One MLLP connection used in request/reply fashion.
pub struct MllpClient<S = TcpStream> {
    framed: Framed<S, MllpCodec>,
    /// Bytes the peer sent outside frames since the connection opened.
    discarded: usize,
}

/// A byte stream MLLP can run over: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// TLS settings for a client connection.
#[derive(Clone)]
pub struct ClientTls {
    /// The connector (trust anchors, client certificate, verification).
    pub connector: TlsConnector,
    /// The name to verify the server's certificate against (and send as SNI).
    pub server_name: ServerName<'static>,
}

async fn open_tcp(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(reason)) => return Err(ClientError::Connect { addr: addr.to_owned(), reason }),
        Err(_) => return Err(ClientError::ConnectTimeout { addr: addr.to_owned(), timeout }),
    };
    // Request/reply traffic: send each frame at once.
    stream.set_nodelay(true).map_err(|reason| ClientError::Connect { addr: addr.to_owned(), reason })?;
    Ok(stream)
}

impl MllpClient<TcpStream> {
    /// Opens a TCP connection to `addr` (`host:port`) within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        Ok(Self::new(open_tcp(addr, timeout).await?, MllpCodec::new()))
    }
}

impl MllpClient<Box<dyn Stream>> {
    /// Opens a TCP connection to `addr` and, with `tls`, completes a TLS
    /// handshake on it, both within `timeout`.
    pub async fn connect_with(addr: &str, timeout: Duration, tls: Option<&ClientTls>) -> Result<Self, ClientError> {
        let tcp = open_tcp(addr, timeout).await?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(tls) => {
                let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
                match tokio::time::timeout(timeout, handshake).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(reason)) => return Err(ClientError::Tls { addr: addr.to_owned(), reason }),
                    Err(_) => return Err(ClientError::ConnectTimeout { addr: addr.to_owned(), timeout }),
                }
            }
        };
        Ok(Self::new(stream, MllpCodec::new()))
    }
}

/// A failed read or write, with TLS errors told apart from transport
/// errors: tokio-rustls reports them (alerts received, bad records) as I/O
/// errors that carry the rustls error.
fn failed(error: MllpError) -> ClientError {
    match error {
        MllpError::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => ClientError::TlsSession(e),
        other => other.into(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MllpClient<S> {
    /// Wraps an open stream.
    pub fn new(stream: S, codec: MllpCodec) -> Self {
        Self { framed: Framed::new(stream, codec), discarded: 0 }
    }

    /// Sends `message` framed and waits up to `timeout` for the reply frame.
    pub async fn exchange(&mut self, message: &[u8], timeout: Duration) -> Result<Bytes, ClientError> {
        let work = async {
            self.framed.send(message).await.map_err(failed)?;
            self.next_reply().await
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(ClientError::ReplyTimeout(timeout)))
    }

    /// Frames `message` into the write buffer without sending it, so that
    /// several messages go out in one write (see [`flush`](Self::flush)).
    /// MLLP answers in order on one connection: each reply read with
    /// [`receive`](Self::receive) belongs to the oldest message without one.
    ///
    /// Past a few kilobytes fed, feeding writes out what is buffered first;
    /// `timeout` bounds that wait, for a peer that has stopped reading.
    pub async fn feed(&mut self, message: &[u8], timeout: Duration) -> Result<(), ClientError> {
        match tokio::time::timeout(timeout, self.framed.feed(message)).await {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(ClientError::SendTimeout(timeout)),
        }
    }

    /// Sends everything fed, within `timeout`.
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), ClientError> {
        match tokio::time::timeout(timeout, SinkExt::<&[u8]>::flush(&mut self.framed)).await {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(ClientError::SendTimeout(timeout)),
        }
    }

    /// Waits up to `timeout` for the next reply frame.
    pub async fn receive(&mut self, timeout: Duration) -> Result<Bytes, ClientError> {
        tokio::time::timeout(timeout, self.next_reply()).await.unwrap_or(Err(ClientError::ReplyTimeout(timeout)))
    }

    async fn next_reply(&mut self) -> Result<Bytes, ClientError> {
        loop {
            match self.framed.next().await {
                Some(Ok(MllpFrame::Message(reply))) => return Ok(reply),
                Some(Ok(MllpFrame::Discarded { bytes })) => {
                    self.discarded += bytes;
                    tracing::debug!(bytes, "peer sent bytes outside MLLP frames; dropped");
                }
                Some(Ok(MllpFrame::Oversized { len, .. })) => return Err(ClientError::OversizedReply { len }),
                Some(Err(e)) => return Err(failed(e)),
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Checks, without waiting, that a connection that has been idle is
    /// still usable before a message is written on it: the peer may have
    /// closed it (a receiver that closes idle connections, or restarted),
    /// reset it, or sent something nobody asked for. Writing on such a
    /// connection would cost the message an attempt; noticed here, it
    /// costs a reconnect.
    ///
    /// A close that is still on its way is not seen; the exchange that
    /// follows then fails as a transport failure.
    pub fn check_idle(&mut self) -> Result<(), ClientError> {
        use futures_util::FutureExt as _;
        match self.framed.next().now_or_never() {
            None if self.framed.read_buffer().is_empty() && !self.framed.codec().in_frame() => Ok(()),
            None | Some(Some(Ok(_))) => Err(ClientError::Unsolicited),
            Some(Some(Err(e))) => Err(failed(e)),
            Some(None) => Err(ClientError::Closed),
        }
    }

    /// Bytes the peer sent outside frames so far.
    pub fn discarded_bytes(&self) -> usize {
        self.discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver that accepts and then never reads: what is fed cannot
    /// all be sent, and feeding or flushing says so within the timeout
    /// rather than waiting for ever or calling it a missing reply.
    #[tokio::test]
    async fn a_peer_that_stops_reading_makes_sending_time_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let mut client = MllpClient::new(TcpStream::connect(addr).await.unwrap(), MllpCodec::new());
        let _silent = accepting.await.unwrap();
        let message = vec![b'A'; 8 << 20];
        let timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        // 128 MiB in all, far more than loopback's socket buffers hold.
        let mut sent = Ok(());
        for _ in 0..16 {
            sent = client.feed(&message, timeout).await;
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = client.flush(timeout).await;
        }
        assert!(matches!(sent, Err(ClientError::SendTimeout(t)) if t == timeout), "{sent:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
