//! mlx-knife's JSON envelope: `{status, command, data, error}` (key order differs per command).

use serde_json::{Map, Value};

/// Which key order the envelope uses.
#[derive(Clone, Copy)]
pub enum Order {
    /// status, command, data, error (list, show, version).
    DataFirst,
    /// status, command, error, data (health and the write commands).
    ErrorFirst,
}

/// Build an envelope: `Ok(data)` or `Err(error object)`.
pub fn build(command: Option<&str>, order: Order, result: Result<Value, Value>) -> Value {
    let mut m = Map::new();
    let (status, data, error) = match result {
        Ok(d) => ("success", d, Value::Null),
        Err(e) => ("error", Value::Null, e),
    };
    m.insert("status".into(), Value::from(status));
    m.insert("command".into(), command.map_or(Value::Null, Value::from));
    match order {
        Order::DataFirst => {
            m.insert("data".into(), data);
            m.insert("error".into(), error);
        }
        Order::ErrorFirst => {
            m.insert("error".into(), error);
            m.insert("data".into(), data);
        }
    }
    Value::Object(m)
}
