//! JSON-RPC 2.0 as djinn speaks it: request validation, replies and error codes.
//!
//! A request is one JSON object in the first frame of a ZeroMQ message; binary payloads
//! follow as further frames. Every request is answered, even one without an `id` (answered
//! with `"id": null`), because REQ clients wait for a reply to every request they send.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// Parse error: the frame is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Invalid request: JSON, but not a JSON-RPC 2.0 request (or too large).
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The params are missing, of the wrong type or out of range.
pub const INVALID_PARAMS: i64 = -32602;
/// The daemon failed while answering.
pub const INTERNAL_ERROR: i64 = -32603;
/// The request carries no token, or the wrong one.
pub const UNAUTHORIZED: i64 = -32001;
/// The thing named does not exist (a profile, a layer, a file).
pub const NOT_FOUND: i64 = -32002;
/// The actor that serves the method is restarting or stopped; retry shortly.
pub const UNAVAILABLE: i64 = -32003;
/// The daemon is shutting down and takes no new requests.
pub const SHUTTING_DOWN: i64 = -32004;
/// Too many requests are in flight; retry shortly.
pub const BUSY: i64 = -32005;
/// The request does not fit the daemon's state (dj.start while a set plays, dj.stop when
/// none does).
pub const CONFLICT: i64 = -32006;

/// An error reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// A -32602 naming the field at fault in `data.field`.
    pub fn invalid_param(field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: INVALID_PARAMS,
            message: format!("{field}: {message}"),
            data: Some(json!({ "field": field })),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(INTERNAL_ERROR, message.to_string())
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// A request's id exactly as the client wrote it (a string, a number or null), so that
/// it comes back byte for byte: a number beyond 64 bits or with an exponent is not
/// rounded through a float on the way.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RequestId(Box<RawValue>);

impl RequestId {
    /// The id of a request whose own id could not be read.
    pub fn null() -> Self {
        Self(RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!()))
    }

    /// Takes the raw id member of a request, or refuses it (`None`) when it is not a
    /// string, a number or null.
    fn read(raw: Box<RawValue>) -> Option<Self> {
        match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Some(Self(raw)),
            Some(b'n') => Some(Self::null()),
            _ => None,
        }
    }

    /// The id as the client wrote it.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Reads just the id of a frame, for a reply that must not wait for (or cost) a full
/// parse, such as "busy": null when the frame is not an object with a valid id.
pub fn peek_id(frame: &[u8]) -> RequestId {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Box<RawValue>>,
    }
    serde_json::from_slice::<IdOnly>(frame)
        .ok()
        .and_then(|r| r.id)
        .and_then(RequestId::read)
        .unwrap_or_else(RequestId::null)
}

/// Reads just the method name of a frame, when it has one.
pub fn peek_method(frame: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct MethodOnly {
        method: Option<String>,
    }
    serde_json::from_slice::<MethodOnly>(frame).ok()?.method
}

/// A reply, serialized with its members in the order the spec lists them.
#[derive(Debug, Serialize)]
pub struct Response {
    jsonrpc: &'static str,
    id: RequestId,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<RpcError>,
}

impl Response {
    pub fn new(id: RequestId, outcome: Result<Value, RpcError>) -> Self {
        let (result, error) = match outcome {
            Ok(result) => (Some(result), None),
            Err(error) => (None, Some(error)),
        };
        Self {
            jsonrpc: "2.0",
            id,
            result,
            error,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // NOTE: serializing plain JSON values into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Params,
    pub token: Option<String>,
}

/// Why a frame is not a request; carries the id when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub id: RequestId,
    pub error: RpcError,
}

impl Request {
    /// Validates one frame as a JSON-RPC 2.0 request.
    pub fn parse(frame: &[u8]) -> Result<Request, Box<Rejected>> {
        let reject = |id: RequestId, code, message: &str| {
            Box::new(Rejected {
                id,
                error: RpcError::new(code, message),
            })
        };
        // NOTE: members are read raw first so that the id can be echoed exactly as sent;
        // the others are then parsed as values.
        let members: HashMap<String, Box<RawValue>> = match serde_json::from_slice(frame) {
            Ok(members) => members,
            Err(e) => {
                return Err(match serde_json::from_slice::<Value>(frame) {
                    Err(e) => reject(RequestId::null(), PARSE_ERROR, &format!("parse error: {e}")),
                    Ok(Value::Array(_)) => reject(
                        RequestId::null(),
                        INVALID_REQUEST,
                        "invalid request: batches are not supported; send one request per message",
                    ),
                    Ok(_) => {
                        tracing::debug!(error = %e, "not a request object");
                        reject(
                            RequestId::null(),
                            INVALID_REQUEST,
                            "invalid request: expected a JSON-RPC 2.0 object",
                        )
                    }
                });
            }
        };
        let mut object = Map::new();
        let mut id = RequestId::null();
        for (name, raw) in members {
            if name == "id" {
                id = RequestId::read(raw).ok_or_else(|| {
                    reject(
                        RequestId::null(),
                        INVALID_REQUEST,
                        "invalid request: id must be a string, a number or null",
                    )
                })?;
                continue;
            }
            let value: Value = serde_json::from_str(raw.get()).map_err(|e| {
                reject(RequestId::null(), PARSE_ERROR, &format!("parse error: {e}"))
            })?;
            object.insert(name, value);
        }
        if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
            return Err(reject(
                id,
                INVALID_REQUEST,
                "invalid request: \"jsonrpc\" must be \"2.0\"",
            ));
        }
        let method = match object.remove("method") {
            Some(Value::String(method)) if !method.is_empty() => method,
            _ => {
                return Err(reject(
                    id,
                    INVALID_REQUEST,
                    "invalid request: \"method\" must be a non-empty string",
                ));
            }
        };
        let token = match object.remove("token") {
            None => None,
            Some(Value::String(token)) => Some(token),
            Some(_) => {
                return Err(reject(
                    id,
                    INVALID_REQUEST,
                    "invalid request: \"token\" must be a string",
                ));
            }
        };
        let params = match object.remove("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(params)) => params,
            Some(_) => {
                return Err(Box::new(Rejected {
                    id,
                    error: RpcError::invalid_param("params", "must be an object of named params"),
                }));
            }
        };
        if let Some(extra) = object.keys().find(|k| k.as_str() != "jsonrpc") {
            let message = format!("invalid request: unknown member {extra:?}");
            return Err(reject(id, INVALID_REQUEST, &message));
        }
        Ok(Request {
            id,
            method,
            params: Params(params),
            token,
        })
    }
}

/// Named params, read field by field so each error names its field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(pub Map<String, Value>);

impl Params {
    /// Refuses any param not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), RpcError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(field) if known.is_empty() => Err(RpcError::invalid_param(
                field,
                "this method takes no params",
            )),
            Some(field) => Err(RpcError::invalid_param(
                field,
                format!("unknown param; expected {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, RpcError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(field, "a string", other)),
        }
    }

    pub fn str(&self, field: &str) -> Result<&str, RpcError> {
        self.opt_str(field)?
            .ok_or_else(|| RpcError::invalid_param(field, "is required"))
    }

    pub fn opt_f64(&self, field: &str) -> Result<Option<f64>, RpcError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(wrong_type(field, "a number", other)),
        }
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, RpcError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(field, "true or false", other)),
        }
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> RpcError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    RpcError::invalid_param(field, format!("expected {expected}, got {got}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(frame: &str) -> i64 {
        Request::parse(frame.as_bytes()).unwrap_err().error.code
    }

    #[test]
    fn malformed_frames_get_the_standard_codes() {
        assert_eq!(code("{"), PARSE_ERROR);
        assert_eq!(code("\u{1}\u{2}"), PARSE_ERROR);
        assert_eq!(code("42"), INVALID_REQUEST);
        assert_eq!(code("[]"), INVALID_REQUEST);
        assert_eq!(code(r#"{"method":"daemon.ping","id":1}"#), INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","method":"a","id":1}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":7,"id":1}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"a","id":[1]}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"a","id":1,"x":2}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"a","params":[1]}"#),
            INVALID_PARAMS
        );
    }

    #[test]
    fn the_id_is_kept_when_it_can_be_read() {
        let rejected = Request::parse(br#"{"jsonrpc":"1.0","method":"a","id":"x"}"#).unwrap_err();
        assert_eq!(rejected.id.as_str(), r#""x""#);
    }

    #[test]
    fn ids_come_back_exactly_as_sent() {
        for id in [
            "18446744073709551617",
            "-99999999999999999999999",
            "1.5e300",
            "0.1000000000000000055511151231257827",
            r#""\u00e9t\u00e9""#,
            "null",
        ] {
            let frame = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"daemon.ping"}}"#);
            let request = Request::parse(frame.as_bytes()).unwrap();
            let reply = Response::new(request.id, Ok(json!("pong"))).to_bytes();
            let expected = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"pong"}}"#);
            assert_eq!(String::from_utf8(reply).unwrap(), expected);
            assert_eq!(peek_id(frame.as_bytes()).as_str(), id);
        }
        assert_eq!(peek_id(b"{not json").as_str(), "null");
        assert_eq!(peek_id(br#"{"id":[1]}"#).as_str(), "null");
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"a","id":true}"#),
            INVALID_REQUEST
        );
    }

    #[test]
    fn a_good_request_parses() {
        let frame = br#"{"jsonrpc":"2.0","id":7,"method":"transport.set","params":{"tempo":128},"token":"t"}"#;
        let request = Request::parse(frame).unwrap();
        assert_eq!(request.id.as_str(), "7");
        assert_eq!(request.method, "transport.set");
        assert_eq!(request.params.opt_f64("tempo").unwrap(), Some(128.0));
        assert_eq!(request.token.as_deref(), Some("t"));
        let err = request.params.opt_str("tempo").unwrap_err();
        assert_eq!(err.data, Some(json!({"field": "tempo"})));
        assert_eq!(
            request.params.only(&["key"]).unwrap_err().code,
            INVALID_PARAMS
        );
    }

    #[test]
    fn replies_keep_the_spec_member_order() {
        let ok = Response::new(peek_id(br#"{"id":1}"#), Ok(json!("pong")));
        assert_eq!(
            ok.to_bytes(),
            br#"{"jsonrpc":"2.0","id":1,"result":"pong"}"#
        );
        let err = Response::new(
            RequestId::null(),
            Err(RpcError::new(PARSE_ERROR, "parse error")),
        );
        assert_eq!(
            err.to_bytes(),
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#
        );
    }
}
