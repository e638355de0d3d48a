//! The core's defaults (`pillarbox::surface`) for the facade, which writes
//! none of its own: by call and option as JavaScript names them
//! (camelCase, a duration in milliseconds under its name with `Ms`).

use napi_derive::napi;
use pillarbox::surface::DefaultValue;
use serde_json::{Map, Value};

use crate::errors::camel;

/// The defaults as JSON (`lib/defaults.js` parses it once).
#[napi]
pub fn defaults() -> String {
    let mut calls = Map::new();
    for (call, options) in pillarbox::surface::defaults() {
        let mut values = Map::new();
        for (name, value) in options {
            let (name, value) = match value {
                DefaultValue::Count(n) => (camel(name), Value::from(n)),
                DefaultValue::Duration(d) => {
                    (format!("{}Ms", camel(name)), d.map_or(Value::Null, |d| Value::from(d.as_secs_f64() * 1000.0)))
                }
                DefaultValue::Number(n) => (camel(name), Value::from(n)),
                DefaultValue::Text(text) => (camel(name), Value::from(text)),
                DefaultValue::Unset => (camel(name), Value::Null),
            };
            values.insert(name, value);
        }
        calls.insert(camel(call), Value::Object(values));
    }
    Value::Object(calls).to_string()
}
