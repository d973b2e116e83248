//! The stdio transport, with JSON-RPC parse errors answered.
//!
//! rmcp drops a line of stdin that is not JSON without a word, which leaves a client that
//! sent a broken message waiting for an answer that never comes. JSON-RPC 2.0 asks for a
//! parse error (`-32700`, `id: null`) instead, so stdin is read here first: each line that
//! is JSON goes on to rmcp, each one that is not gets its error. Both rmcp's messages and
//! those errors reach stdout through one writer, a whole line at a time, so they never
//! interleave.

use serde::de::IgnoredAny;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, duplex,
};
use tokio::sync::mpsc;

/// Room in each pipe between the filter and rmcp.
const PIPE_BYTES: usize = 64 * 1024;

/// The JSON-RPC answer to a line that is not JSON.
const PARSE_ERROR: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error: not JSON"}}"#;

/// The reader and writer rmcp serves on, wired to `input` and `output` through the
/// filter tasks (spawned on the current runtime; they end when either side closes).
pub fn filtered<R, W>(input: R, output: W) -> (DuplexStream, DuplexStream)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_reader, to_rmcp) = duplex(PIPE_BYTES);
    let (rmcp_writer, from_rmcp) = duplex(PIPE_BYTES);
    let (errors, pending_errors) = mpsc::unbounded_channel();

    tokio::spawn(filter_input(input, to_rmcp, errors));
    tokio::spawn(merge_output(from_rmcp, pending_errors, output));
    (rmcp_reader, rmcp_writer)
}

/// Passes JSON lines on to rmcp and turns the rest into parse errors. Ends at the end of
/// input, which closes rmcp's side so that the session ends too.
async fn filter_input<R: AsyncRead + Unpin>(
    input: R,
    mut to_rmcp: DuplexStream,
    errors: mpsc::UnboundedSender<&'static str>,
) {
    let mut lines = BufReader::new(input).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        if serde_json::from_str::<IgnoredAny>(&line).is_err() {
            tracing::debug!(bytes = line.len(), "mcp input line is not JSON");
            let _ = errors.send(PARSE_ERROR);
            continue;
        }
        let sent = async {
            to_rmcp.write_all(line.as_bytes()).await?;
            to_rmcp.write_all(b"\n").await
        };
        if sent.await.is_err() {
            break;
        }
    }
    let _ = to_rmcp.shutdown().await;
}

/// Writes rmcp's messages and the parse errors to `output`, one whole line at a time,
/// until rmcp closes its side.
async fn merge_output<W: AsyncWrite + Unpin>(
    from_rmcp: DuplexStream,
    mut errors: mpsc::UnboundedReceiver<&'static str>,
    mut output: W,
) {
    let mut messages = BufReader::new(from_rmcp).lines();
    loop {
        let line = tokio::select! {
            message = messages.next_line() => match message {
                Ok(Some(message)) => message,
                _ => break,
            },
            Some(error) = errors.recv() => error.to_owned(),
        };
        let written = async {
            output.write_all(line.as_bytes()).await?;
            output.write_all(b"\n").await?;
            output.flush().await
        };
        if written.await.is_err() {
            return;
        }
    }
    // Errors of the last lines of input may still wait when rmcp ends: answer them too.
    while let Ok(error) = errors.try_recv() {
        if output.write_all(format!("{error}\n").as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = output.flush().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_line_that_is_not_json_gets_a_parse_error_and_json_goes_on() {
        let input: &[u8] = b"not { json\n{\"jsonrpc\":\"2.0\",\"id\":1}\n";
        let (out_writer, mut out_reader) = duplex(4096);
        let (mut rmcp_in, mut rmcp_out) = filtered(input, out_writer);

        let mut passed = String::new();
        rmcp_in.read_to_string(&mut passed).await.expect("read what rmcp gets");
        assert_eq!(passed, "{\"jsonrpc\":\"2.0\",\"id\":1}\n");

        rmcp_out.write_all(b"{\"answer\":1}\n").await.expect("rmcp writes");
        rmcp_out.shutdown().await.expect("rmcp closes");
        drop(rmcp_out);
        let mut written = String::new();
        out_reader.read_to_string(&mut written).await.expect("read stdout");
        let lines: Vec<&str> = written.lines().collect();
        assert!(lines.contains(&PARSE_ERROR), "{written}");
        assert!(lines.contains(&"{\"answer\":1}"), "{written}");
    }
}
