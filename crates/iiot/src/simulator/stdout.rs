//! [`StdoutSink`]: a [`Publisher`] that writes one JSON line per message to stdout, for
//! `iiot simulate --output stdout` and piping into other tools.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use iiot_transport::{Publisher, Receipt, TransportError};
use tokio::io::{AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::sync::Mutex;

/// Output buffer: one write system call per this many bytes (about 130 readings).
const BUFFER_BYTES: usize = 64 * 1024;

type Output = BufWriter<Box<dyn AsyncWrite + Send + Unpin>>;

/// Writes each payload followed by `\n` to a buffered stdout; topic and key are not written.
/// [`Publisher::flush`] flushes the buffer. When the reader goes away (`| head`) every call
/// returns [`TransportError::Closed`], which ends a simulator run cleanly.
pub struct StdoutSink {
    out: Mutex<Output>,
    closed: AtomicBool,
}

impl StdoutSink {
    /// A sink writing to this process's stdout.
    pub fn new() -> StdoutSink {
        StdoutSink::with_writer(tokio::io::stdout())
    }

    /// A sink writing to `writer` instead of stdout (tests).
    pub(crate) fn with_writer(writer: impl AsyncWrite + Send + Unpin + 'static) -> StdoutSink {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = Box::new(writer);
        StdoutSink {
            out: Mutex::new(BufWriter::with_capacity(BUFFER_BYTES, writer)),
            closed: AtomicBool::new(false),
        }
    }

    fn fail(&self, e: io::Error) -> TransportError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            self.closed.store(true, Ordering::Relaxed);
            TransportError::Closed
        } else {
            TransportError::Delivery(format!("writing to stdout: {e}"))
        }
    }

    fn check_open(&self) -> Result<(), TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            Err(TransportError::Closed)
        } else {
            Ok(())
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::new()
    }
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Publisher for StdoutSink {
    async fn publish(
        &self,
        _topic: &str,
        _key: &[u8],
        payload: Bytes,
    ) -> Result<Receipt, TransportError> {
        self.check_open()?;
        let mut out = self.out.lock().await;
        let written = match out.write_all(&payload).await {
            Ok(()) => out.write_all(b"\n").await,
            Err(e) => Err(e),
        };
        written.map_err(|e| self.fail(e))?;
        Ok(Receipt::Delivered)
    }

    async fn flush(&self) -> Result<(), TransportError> {
        self.check_open()?;
        self.out
            .lock()
            .await
            .flush()
            .await
            .map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn writes_json_lines_and_flushes() {
        let (writer, mut reader) = tokio::io::duplex(1 << 20);
        let sink = StdoutSink::with_writer(writer);
        for payload in [&b"{\"a\":1}"[..], b"{\"b\":2}"] {
            let receipt = sink
                .publish("device-data", b"k", Bytes::copy_from_slice(payload))
                .await
                .expect("publishes");
            assert!(matches!(receipt, Receipt::Delivered));
        }
        sink.flush().await.expect("flushes");
        drop(sink);
        let mut text = String::new();
        reader.read_to_string(&mut text).await.expect("reads");
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
    }

    #[tokio::test]
    async fn a_vanished_reader_closes_the_sink_instead_of_panicking() {
        let (writer, reader) = tokio::io::duplex(64);
        drop(reader);
        let sink = StdoutSink::with_writer(writer);
        // Small payloads sit in the buffer; the broken pipe shows at the latest on flush.
        let payload = Bytes::from(vec![b'x'; 100_000]);
        let first = sink.publish("t", b"k", payload.clone()).await;
        assert!(matches!(first, Err(TransportError::Closed)), "{first:?}");
        assert!(matches!(sink.flush().await, Err(TransportError::Closed)));
        assert!(matches!(
            sink.publish("t", b"k", payload).await,
            Err(TransportError::Closed)
        ));
    }
}
