//! A minimal MLLP client: send one message, wait for the one reply.
//!
//! Used by `switchboard send` and by outbound operations. Generic over the
//! stream so that a TLS stream can be used in place of TCP.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::{MllpCodec, MllpError, MllpFrame};

/// Why an exchange failed. None of the variants carries message content.
#[derive(Debug, Error)]
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
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    ReplyTimeout(Duration),
    /// The peer closed the connection before replying.
    #[error("the peer closed the connection before replying")]
    Closed,
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

impl MllpClient<TcpStream> {
    /// Opens a TCP connection to `addr` (`host:port`) within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(reason)) => return Err(ClientError::Connect { addr: addr.to_owned(), reason }),
            Err(_) => return Err(ClientError::ConnectTimeout { addr: addr.to_owned(), timeout }),
        };
        // Request/reply traffic: send each frame at once.
        stream.set_nodelay(true).map_err(|reason| ClientError::Connect { addr: addr.to_owned(), reason })?;
        Ok(Self::new(stream, MllpCodec::new()))
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
            self.framed.send(message).await?;
            loop {
                match self.framed.next().await {
                    Some(Ok(MllpFrame::Message(reply))) => return Ok(reply),
                    Some(Ok(MllpFrame::Discarded { bytes })) => {
                        self.discarded += bytes;
                        tracing::debug!(bytes, "peer sent bytes outside MLLP frames; dropped");
                    }
                    Some(Ok(MllpFrame::Oversized { len, .. })) => return Err(ClientError::OversizedReply { len }),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(ClientError::Closed),
                }
            }
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(ClientError::ReplyTimeout(timeout)))
    }

    /// Bytes the peer sent outside frames so far.
    pub fn discarded_bytes(&self) -> usize {
        self.discarded
    }
}
