//! A WebSocket client of the hub (tokio-tungstenite). Every wait has a generous timeout and
//! waits for a condition, never a fixed time.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async, connect_async_with_config,
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(20);

/// Connects and returns the socket and the welcome.
pub async fn connect(url: &str) -> (Ws, Value) {
    let (mut ws, _) = connect_async_with_config(url, None, true)
        .await
        .expect("upgrade");
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The HTTP status of a refused upgrade.
pub async fn refused(request: impl IntoClientRequest + Unpin) -> u16 {
    match connect_async(request).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// The next server message as JSON, heartbeats included.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the timeout")
            .expect("the connection is open")
            .expect("a good frame");
        match msg {
            Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
            Message::Close(frame) => panic!("unexpected close: {frame:?}"),
            _ => {}
        }
    }
}

/// The next server message as JSON, heartbeats skipped.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] != "heartbeat" {
            return v;
        }
    }
}

/// Connects to `url`, subscribes to every device and waits until the hub has applied it.
pub async fn connect_to_all(url: &str) -> Ws {
    let (mut ws, _) = connect(url).await;
    send(&mut ws, json!({"type": "subscribe_all"})).await;
    sync(&mut ws).await;
    ws
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Subscribes to `device_ids`.
pub async fn subscribe(ws: &mut Ws, device_ids: &[&str]) {
    send(ws, json!({"type": "subscribe", "device_ids": device_ids})).await;
}

/// Pings and returns what arrived before the pong: the server has applied everything sent
/// before the ping when the pong arrives.
pub async fn sync(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"type": "ping"})).await;
    let mut before = Vec::new();
    loop {
        let v = recv(ws).await;
        if v["type"] == "pong" {
            return before;
        }
        before.push(v);
    }
}

/// Reads until the server's close frame and returns its code.
pub async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a close frame within the timeout");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

pub fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("test payloads are JSON")
}
