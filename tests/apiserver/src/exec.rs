//! `pods/{name}/exec` over WebSocket, as kube-apiserver serves it to kubectl (1.30 and
//! later) and client-go's remote command: subprotocol `v5.channel.k8s.io` (or `v4`), frames
//! `[channel, bytes…]` with channel 0 stdin, 1 stdout and 2 stderr, the outcome as a
//! `metav1.Status` on channel 3, and in v5 a close frame `[255, 0]` when the client's
//! stdin ends. The command runs in the container as the kubelet's runtime runs it
//! ([`crate::kubelet::exec_command`]); a TTY is not offered.

use std::process::Stdio;

use axum::{http::HeaderMap, response::Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use crate::{
    error::ApiError,
    portforward::{Socket, accept_websocket, websocket_key},
    registry::TypeKey,
    store::Store,
};

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
/// v5: the client closed one of its streams.
const CLOSE: u8 = 255;

/// What the request asks to run, from its query.
#[derive(Debug, PartialEq)]
pub struct ExecRequest {
    /// `command` (repeated): the argv.
    pub command: Vec<String>,
    /// `container`, or the pod's only container.
    pub container: String,
    /// `stdin`, `stdout`, `stderr`.
    pub streams: [bool; 3],
}

/// Reads the query as kube-apiserver does, refusing what it refuses.
pub fn request(pod: &Value, query: Option<&str>) -> Result<ExecRequest, ApiError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let value = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    // As kube-apiserver reads these flags: present, and not false.
    let flag = |key: &str| value(key).is_some_and(|v| !(v == "0" || v.eq_ignore_ascii_case("false")));
    let container = crate::logs::container_for(pod, value("container"))?;
    let command: Vec<String> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let streams = [flag("stdin"), flag("stdout"), flag("stderr")];
    if !streams.iter().any(|s| *s) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if flag("tty") {
        return Err(ApiError::bad_request("this server runs commands without a TTY: leave out -t"));
    }
    Ok(ExecRequest { command, container, streams })
}

/// The `metav1.Status` an exec ends with: success, or the exit code as the kubelet reports
/// it (128 plus the signal for a command a signal ended, as the runtime reports it).
pub fn outcome(status: std::process::ExitStatus) -> Value {
    use std::os::unix::process::ExitStatusExt as _;
    match status.code().or_else(|| status.signal().map(|s| 128 + s)) {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        code => {
            let code = code.unwrap_or(1);
            json!({
                "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
    }
}

/// Upgrades the request and runs the command in the pod's container.
pub fn serve(
    store: &Store,
    state_dir: Option<&std::path::Path>,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, ApiError> {
    let pod = store.get(&TypeKey { group: String::new(), plural: "pods".into() }, namespace, name)?;
    let asked = request(&pod, query)?;
    let state_dir = state_dir.ok_or_else(|| {
        ApiError::bad_request(format!("pod {name} runs on no node of this server: there is nothing to exec in"))
    })?;
    let command = crate::kubelet::exec_command(state_dir, &pod, &asked.container, &asked.command)
        .map_err(ApiError::bad_request)?;
    let websocket = websocket_key(headers).zip(upgrade).ok_or_else(|| {
        ApiError::bad_request("exec is served over WebSocket (v4.channel.k8s.io, v5.channel.k8s.io) only")
    })?;
    accept_websocket(headers, websocket, &PROTOCOLS, move |socket, _| run(socket, command, asked.streams))
}

/// Runs the command, moving its streams over the socket, and ends with its outcome.
async fn run(socket: Socket, mut command: tokio::process::Command, [stdin, stdout, stderr]: [bool; 3]) {
    let (mut sink, mut frames) = socket.split();
    let piped = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
    command.stdin(piped(stdin)).stdout(piped(stdout)).stderr(piped(stderr)).kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let failure =
                json!({"metadata": {}, "status": "Failure", "message": format!("cannot run the command: {e}")});
            let _ = sink.send(Message::binary([vec![ERROR], failure.to_string().into_bytes()].concat())).await;
            close(&mut sink).await;
            return;
        }
    };
    let (to_client, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut input = child.stdin.take();
    // The client's frames: stdin until it closes it; the command is not waited on for them.
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(message)) = frames.next().await {
            let Message::Binary(data) = message else { continue };
            match data.first() {
                Some(&STDIN) => {
                    if let Some(pipe) = input.as_mut()
                        && pipe.write_all(&data[1..]).await.is_err()
                    {
                        input = None;
                    }
                }
                Some(&CLOSE) if data.get(1) == Some(&STDIN) => input = None,
                _ => {}
            }
        }
    });
    let pump = |pipe: Option<Box<dyn AsyncRead + Unpin + Send>>, channel: u8| {
        let out = to_client.clone();
        tokio::spawn(async move {
            let Some(mut pipe) = pipe else { return };
            let mut buffer = vec![0u8; 32 * 1024];
            while let Ok(n) = pipe.read(&mut buffer).await {
                if n == 0 || out.send([&[channel], &buffer[..n]].concat()).await.is_err() {
                    break;
                }
            }
        })
    };
    let out = pump(child.stdout.take().map(|p| Box::new(p) as _), STDOUT);
    let err = pump(child.stderr.take().map(|p| Box::new(p) as _), STDERR);
    drop(to_client);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(Message::binary(frame)).await.is_err() {
                break;
            }
        }
        sink
    });
    let status = tokio::select! {
        status = child.wait() => status,
        // The client went away: so does the command.
        _ = &mut reader => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return;
        }
    };
    let _ = (out.await, err.await);
    reader.abort();
    let Ok(mut sink) = writer.await else { return };
    let Ok(status) = status else { return };
    let _ = sink.send(Message::binary([vec![ERROR], outcome(status).to_string().into_bytes()].concat())).await;
    close(&mut sink).await;
}

/// Ends the session with a normal closure: client-go reads a close without a status code
/// as a broken stream.
async fn close(sink: &mut futures::stream::SplitSink<Socket, Message>) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"initContainers": [{"name": "agent"}], "containers": [{"name": "app"}]}})
    }

    #[test]
    fn the_query_is_read_as_kube_apiserver_reads_it() {
        let asked = request(&pod(), Some("command=ls&command=-l&stdout=true&stderr=true")).unwrap();
        assert_eq!(
            asked,
            ExecRequest {
                command: vec!["ls".into(), "-l".into()],
                container: "app".into(),
                streams: [false, true, true]
            }
        );
        assert_eq!(request(&pod(), Some("command=ls&container=agent&stdin=true")).unwrap().container, "agent");
        let refused = |query: &str| request(&pod(), Some(query)).unwrap_err().message;
        assert_eq!(refused("command=ls&container=db&stdout=true"), "container db is not valid for pod web");
        assert_eq!(refused("stdout=true"), "you must specify at least 1 command");
        assert_eq!(refused("command=ls"), "you must specify at least 1 of stdin, stdout, stderr");
        assert!(refused("command=sh&stdin=true&tty=true").contains("TTY"));
    }

    #[test]
    fn a_failed_command_ends_with_its_exit_code() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(outcome(std::process::ExitStatus::from_raw(0))["status"], "Success");
        let failed = outcome(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let killed = outcome(std::process::ExitStatus::from_raw(9));
        assert_eq!(killed["details"]["causes"][0]["message"], "137", "128 and the signal");
    }
}
