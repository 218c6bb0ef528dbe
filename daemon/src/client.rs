//! A small Rust client for djinnd: JSON-RPC calls over REQ and the event stream over SUB.
//!
//! Used by the `djinn` command and the tests. Every call is bounded by a timeout, so a
//! missing daemon is reported instead of waited on forever.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use zeromq::{ReqSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

/// Why a call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered in time: the daemon is not running, or not at this endpoint.
    #[error("no answer from djinnd at {endpoint} within {} ms (is djinnd running?)", .after.as_millis())]
    Timeout { endpoint: String, after: Duration },
    /// The socket failed.
    #[error("cannot talk to djinnd at {endpoint}: {source}")]
    Socket {
        endpoint: String,
        source: zeromq::ZmqError,
    },
    /// The daemon answered with a JSON-RPC error.
    #[error("{message} ({code})")]
    Rpc {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The daemon's answer is not a JSON-RPC reply.
    #[error("unreadable reply from djinnd: {0}")]
    BadReply(String),
}

/// A connection to djinnd's control socket.
pub struct Client {
    endpoint: String,
    token: Option<String>,
    timeout: Duration,
    socket: Option<ReqSocket>,
    next_id: u64,
}

impl Client {
    /// A client for `endpoint`; it connects on the first call.
    pub fn new(endpoint: &str, token: Option<String>, timeout: Duration) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            token,
            timeout,
            socket: None,
            next_id: 1,
        }
    }

    /// Calls `method` with named `params` (an object, or null for none).
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.call_with_payload(method, params, Vec::new())
            .await
            .map(|(result, _)| result)
    }

    /// Calls `method` with binary payload frames; returns the result and any reply payload.
    pub async fn call_with_payload(
        &mut self,
        method: &str,
        params: Value,
        payload: Vec<Bytes>,
    ) -> Result<(Value, Vec<Bytes>), ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if !params.is_null() {
            request["params"] = params;
        }
        if let Some(token) = &self.token {
            request["token"] = json!(token);
        }
        let mut frames = vec![Bytes::from(request.to_string())];
        frames.extend(payload);
        let reply = self.exchange(frames).await?;
        let mut reply = reply.into_iter();
        let body = reply
            .next()
            .ok_or_else(|| ClientError::BadReply("empty reply".into()))?;
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| ClientError::BadReply(e.to_string()))?;
        if let Some(error) = value.get("error") {
            return Err(ClientError::Rpc {
                code: error["code"].as_i64().unwrap_or_default(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
                data: error.get("data").cloned(),
            });
        }
        let result = value
            .get("result")
            .cloned()
            .ok_or_else(|| ClientError::BadReply(format!("no result in {value}")))?;
        Ok((result, reply.collect()))
    }

    /// Sends raw frames and returns the reply frames.
    pub async fn exchange(&mut self, frames: Vec<Bytes>) -> Result<Vec<Bytes>, ClientError> {
        let message = ZmqMessage::try_from(frames)
            .map_err(|_| ClientError::BadReply("nothing to send".into()))?;
        let endpoint = self.endpoint.clone();
        let socket_error = |source| ClientError::Socket {
            endpoint: endpoint.clone(),
            source,
        };
        let mut socket = match self.socket.take() {
            Some(socket) => socket,
            None => {
                let mut socket = ReqSocket::new();
                tokio::time::timeout(self.timeout, socket.connect(&self.endpoint))
                    .await
                    .map_err(|_| self.timeout_error())?
                    .map_err(socket_error)?;
                socket
            }
        };
        let exchange = async {
            socket.send(message).await?;
            socket.recv().await
        };
        let reply = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.timeout_error())?
            .map_err(socket_error)?;
        // NOTE: the socket is put back only after a full exchange; a REQ socket that timed
        // out mid-exchange is in the wrong state for the next request.
        self.socket = Some(socket);
        Ok(reply.into_vec())
    }

    fn timeout_error(&self) -> ClientError {
        ClientError::Timeout {
            endpoint: self.endpoint.clone(),
            after: self.timeout,
        }
    }
}

/// A subscription to djinnd's events.
pub struct Events {
    socket: SubSocket,
}

impl Events {
    /// Subscribes to `topics` (every topic when empty) at `endpoint`.
    pub async fn subscribe(endpoint: &str, topics: &[String]) -> Result<Events, ClientError> {
        let socket_error = |source| ClientError::Socket {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut socket = SubSocket::new();
        socket.connect(endpoint).await.map_err(socket_error)?;
        if topics.is_empty() {
            socket.subscribe("").await.map_err(socket_error)?;
        }
        for topic in topics {
            socket.subscribe(topic).await.map_err(socket_error)?;
        }
        Ok(Events { socket })
    }

    /// The next event: its topic and its JSON body.
    pub async fn next(&mut self) -> Result<(String, Value), ClientError> {
        let message = self
            .socket
            .recv()
            .await
            .map_err(|source| ClientError::Socket {
                endpoint: "events".into(),
                source,
            })?;
        let frames = message.into_vec();
        let (Some(topic), Some(body)) = (frames.first(), frames.get(1)) else {
            return Err(ClientError::BadReply("event without topic and body".into()));
        };
        let topic = String::from_utf8_lossy(topic).into_owned();
        let body =
            serde_json::from_slice(body).map_err(|e| ClientError::BadReply(e.to_string()))?;
        Ok((topic, body))
    }
}
