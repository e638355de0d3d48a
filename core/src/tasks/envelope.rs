//! The task envelope (docs/tasks.md): the one JSON shape a task call
//! travels in, written and read the same way by the Rust, Python and Node
//! task layers.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::worker::HandlerError;

/// The header that names the task, so plain broker tools can filter on it.
pub const TASK_HEADER: &str = "task";
/// The error kind of a message that is not a task envelope (dead-lettered at once).
pub const INVALID_ENVELOPE: &str = "InvalidEnvelope";
/// The error kind of a call of a task this worker does not have (dead-lettered at once).
pub const UNKNOWN_TASK: &str = "UnknownTask";
/// The error kind of a call whose arguments the task cannot take (dead-lettered at once).
pub const INVALID_ARGUMENTS: &str = "InvalidArguments";

/// A task call: the task's name, its positional and its keyword arguments,
/// all JSON values (nothing is ever pickled or evaluated).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct TaskCall {
    /// The task's registered name, e.g. `emails.send_welcome`.
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

impl TaskCall {
    /// A call of `task` with no arguments.
    pub fn new(task: impl Into<String>) -> Self {
        TaskCall { task: task.into(), ..Self::default() }
    }

    /// The envelope's JSON bytes.
    pub fn to_payload(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            task: &'a str,
            args: &'a [Value],
            kwargs: &'a Map<String, Value>,
        }
        let envelope = Envelope { task: &self.task, args: &self.args, kwargs: &self.kwargs };
        serde_json::to_vec(&envelope).expect("JSON values always serialize")
    }

    /// Reads an envelope. A payload that is not one (not UTF-8, not JSON, no
    /// task name, args not an array or kwargs not an object) is a fatal
    /// error of kind [`INVALID_ENVELOPE`]: no retry can fix it.
    pub fn from_payload(payload: &[u8]) -> std::result::Result<Self, HandlerError> {
        let invalid =
            |why: String| HandlerError::fatal(format!("not a task envelope ({why})")).with_kind(INVALID_ENVELOPE);
        let text = std::str::from_utf8(payload).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
        let body: Value = serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
        let Value::Object(mut body) = body else { return Err(invalid("not a JSON object".into())) };
        let Some(Value::String(task)) = body.remove("task") else { return Err(invalid("no task name".into())) };
        let args = match body.remove("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(args)) => args,
            Some(_) => return Err(invalid("args must be an array, kwargs an object".into())),
        };
        let kwargs = match body.remove("kwargs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(kwargs)) => kwargs,
            Some(_) => return Err(invalid("args must be an array, kwargs an object".into())),
        };
        Ok(TaskCall { task, args, kwargs })
    }

    /// Positional argument `index` as a `T`. Missing or of another type, it
    /// is a fatal error of kind [`INVALID_ARGUMENTS`].
    pub fn arg<T: DeserializeOwned>(&self, index: usize) -> std::result::Result<T, HandlerError> {
        let value = self.args.get(index).ok_or_else(|| {
            invalid_arguments(format!("task {} takes argument {index}, the call has {}", self.task, self.args.len()))
        })?;
        T::deserialize(value)
            .map_err(|e| invalid_arguments(format!("task {}: argument {index} is not what it takes: {e}", self.task)))
    }

    /// Keyword argument `name` as a `T`, `None` when the call has none.
    /// Of another type, it is a fatal error of kind [`INVALID_ARGUMENTS`].
    pub fn kwarg<T: DeserializeOwned>(&self, name: &str) -> std::result::Result<Option<T>, HandlerError> {
        self.kwargs
            .get(name)
            .map(|value| {
                T::deserialize(value).map_err(|e| {
                    invalid_arguments(format!("task {}: keyword argument {name} is not what it takes: {e}", self.task))
                })
            })
            .transpose()
    }
}

fn invalid_arguments(message: String) -> HandlerError {
    HandlerError::fatal(message).with_kind(INVALID_ARGUMENTS)
}

/// Arguments as JSON values: `to_args(("ada@example.com", 3))?`, for a call
/// made from Rust values.
pub fn to_args<T: Serialize>(args: T) -> Result<Vec<Value>> {
    match serde_json::to_value(args) {
        Ok(Value::Array(args)) => Ok(args),
        Ok(Value::Null) => Ok(Vec::new()),
        Ok(one) => Ok(vec![one]),
        Err(e) => Err(Error::InvalidMessage(format!("task arguments must be JSON values: {e}"))),
    }
}

/// Keyword arguments as a JSON object, from any value that serializes to
/// one (a struct, a map).
pub fn to_kwargs<T: Serialize>(kwargs: T) -> Result<Map<String, Value>> {
    match serde_json::to_value(kwargs) {
        Ok(Value::Object(kwargs)) => Ok(kwargs),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(Error::InvalidMessage("task keyword arguments must serialize to a JSON object".into())),
        Err(e) => Err(Error::InvalidMessage(format!("task keyword arguments must be JSON values: {e}"))),
    }
}

/// Headers of a task message: the caller's, plus [`TASK_HEADER`].
pub(super) fn headers(task: &str, mut extra: BTreeMap<String, String>) -> BTreeMap<String, String> {
    extra.insert(TASK_HEADER.to_string(), task.to_string());
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_envelope_reads_back_as_written() {
        let mut call = TaskCall::new("emails.send_welcome");
        call.args = vec![json!("ada@example.com"), json!(3)];
        call.kwargs.insert("lang".into(), json!("fr"));
        let payload = call.to_payload();
        assert_eq!(
            serde_json::from_slice::<Value>(&payload).unwrap(),
            json!({"task": "emails.send_welcome", "args": ["ada@example.com", 3], "kwargs": {"lang": "fr"}})
        );
        assert_eq!(TaskCall::from_payload(&payload).unwrap(), call);
    }

    #[test]
    fn args_and_kwargs_may_be_left_out_and_unknown_fields_are_ignored() {
        let call = TaskCall::from_payload(br#"{"task":"t","v":2}"#).unwrap();
        assert_eq!((call.task.as_str(), call.args.len(), call.kwargs.len()), ("t", 0, 0));
    }

    #[test]
    fn what_is_not_an_envelope_is_fatal_with_its_kind() {
        for payload in [
            &b"\xff\xfe"[..],
            b"not json",
            b"[1, 2]",
            br#"{"args": []}"#,
            br#"{"task": 7}"#,
            br#"{"task": "t", "args": {}}"#,
            br#"{"task": "t", "kwargs": []}"#,
        ] {
            let error = TaskCall::from_payload(payload).unwrap_err();
            assert_eq!(error.kind, INVALID_ENVELOPE, "{payload:?}");
            assert!(!error.retryable, "{payload:?}");
            assert!(error.message.starts_with("not a task envelope ("), "{}", error.message);
        }
    }

    #[test]
    fn arguments_of_another_type_are_fatal_and_say_which() {
        let call = TaskCall::from_payload(br#"{"task":"t","args":["x"],"kwargs":{"n":"two"}}"#).unwrap();
        assert_eq!(call.arg::<String>(0).unwrap(), "x");
        let wrong = call.arg::<u32>(0).unwrap_err();
        assert_eq!((wrong.kind.as_str(), wrong.retryable), (INVALID_ARGUMENTS, false));
        assert!(call.arg::<String>(1).unwrap_err().message.contains("argument 1"));
        assert!(call.kwarg::<u32>("n").unwrap_err().message.contains("keyword argument n"));
        assert_eq!(call.kwarg::<u32>("missing").unwrap(), None);
    }

    #[test]
    fn rust_values_become_args_and_kwargs() {
        assert_eq!(to_args(("a", 1)).unwrap(), vec![json!("a"), json!(1)]);
        assert_eq!(to_args(()).unwrap(), Vec::<Value>::new());
        assert_eq!(to_args("one").unwrap(), vec![json!("one")]);
        assert_eq!(to_kwargs(json!({"k": 1})).unwrap()["k"], json!(1));
        assert!(to_kwargs(json!([1])).is_err());
    }
}
