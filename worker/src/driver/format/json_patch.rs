//! Patching a JSON document in place, for sites that stream their answer as operations
//! on a document rather than as text: RFC 6902-style `add` / `replace` / `remove` at a
//! JSON Pointer (Perplexity), and set / append at a slash-separated path (DeepSeek).
//! Both address values the same way, so one applier serves both: a path is a list of
//! segments, an array index may count from the end (`-1` is the last element) and `-`
//! names the position after the last one.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Sets an object member or array element; inserts into an array (RFC 6902 `add`).
    Add,
    /// Sets an object member or array element, replacing it.
    Replace,
    /// Appends to a string (text) or an array (elements) at the path.
    Append,
    Remove,
}

/// Splits an RFC 6901 JSON Pointer (`/a/b~1c`) into unescaped segments.
pub fn pointer(path: &str) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    path.trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Splits a plain slash-separated path (`response/fragments/-1/content`).
pub fn slash_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies one operation. Missing members along the path are created, so that a site
/// may set `a/b` before `a` exists: as an array where the last segment is an array
/// position (`-` or a number), else as an object.
pub fn apply(doc: &mut Value, op: Op, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return match op {
            Op::Add | Op::Replace => {
                *doc = value;
                Ok(())
            }
            Op::Append => append(doc, value),
            Op::Remove => {
                *doc = Value::Null;
                Ok(())
            }
        };
    };
    let mut parent = &mut *doc;
    for segment in parents {
        parent = child(parent, segment)?;
    }
    if parent.is_null() {
        *parent = if last == "-" || last.parse::<usize>().is_ok() {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        };
    }
    match parent {
        Value::Object(map) => match op {
            Op::Add | Op::Replace => {
                map.insert(last.clone(), value);
                Ok(())
            }
            Op::Append => append(map.entry(last.clone()).or_insert(Value::Null), value),
            Op::Remove => {
                map.remove(last);
                Ok(())
            }
        },
        Value::Array(items) => {
            let index = index(last, items.len(), op == Op::Add)?;
            match op {
                Op::Add if index <= items.len() => {
                    items.insert(index, value);
                    Ok(())
                }
                Op::Replace if index < items.len() => {
                    items[index] = value;
                    Ok(())
                }
                Op::Append if index < items.len() => append(&mut items[index], value),
                Op::Remove if index < items.len() => {
                    items.remove(index);
                    Ok(())
                }
                _ => Err(format!(
                    "index {last} is past the end of an array of {}",
                    items.len()
                )),
            }
        }
        other => Err(format!("`{last}` of a {}", kind(other))),
    }
}

/// The member or element `segment` of `value`: a missing member is created as null (and
/// becomes an object or array by what is put into it); a null `value` becomes an object.
fn child<'v>(value: &'v mut Value, segment: &str) -> Result<&'v mut Value, String> {
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => Ok(map.entry(segment.to_owned()).or_insert(Value::Null)),
        Value::Array(items) => {
            let len = items.len();
            let i = index(segment, len, false)?;
            items
                .get_mut(i)
                .ok_or_else(|| format!("index {segment} is past the end of an array of {len}"))
        }
        other => Err(format!("`{segment}` of a {}", kind(other))),
    }
}

/// An array index: a number, a negative number counting from the end, or `-` (the
/// position after the last, only where an element can be added).
fn index(segment: &str, len: usize, adding: bool) -> Result<usize, String> {
    if segment == "-" && adding {
        return Ok(len);
    }
    match segment.parse::<i64>() {
        Ok(i) if i >= 0 => Ok(i as usize),
        Ok(i) if i.unsigned_abs() as usize <= len => Ok(len - i.unsigned_abs() as usize),
        _ => Err(format!("`{segment}` is no index into an array of {len}")),
    }
}

fn append(target: &mut Value, value: Value) -> Result<(), String> {
    match (target, value) {
        (Value::String(s), Value::String(more)) => s.push_str(&more),
        (Value::Array(items), Value::Array(more)) => items.extend(more),
        (Value::Array(items), more) => items.push(more),
        (target @ Value::Null, value) => *target = value,
        (target, value) => {
            return Err(format!(
                "cannot append a {} to a {}",
                kind(&value),
                kind(target)
            ))
        }
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc_6902_add_replace_remove_at_pointers() {
        let mut doc = json!({"chunks": ["a"], "answer": ""});
        apply(&mut doc, Op::Add, &pointer("/chunks/-"), json!("b")).unwrap();
        apply(&mut doc, Op::Add, &pointer("/chunks/0"), json!("z")).unwrap();
        apply(&mut doc, Op::Replace, &pointer("/answer"), json!("za")).unwrap();
        apply(&mut doc, Op::Add, &pointer("/a~1b"), json!(1)).unwrap();
        apply(&mut doc, Op::Remove, &pointer("/chunks/1"), Value::Null).unwrap();
        assert_eq!(doc, json!({"chunks": ["z", "b"], "answer": "za", "a/b": 1}));
        assert!(apply(&mut doc, Op::Replace, &pointer("/chunks/5"), json!("x")).is_err());
        assert!(apply(&mut doc, Op::Replace, &pointer("/answer/x"), json!("x")).is_err());
    }

    #[test]
    fn slash_paths_append_to_text_and_count_from_the_end() {
        let mut doc = json!({"response": {"fragments": []}});
        let frag = json!([{"type": "THINK", "content": "Hm"}]);
        apply(
            &mut doc,
            Op::Append,
            &slash_path("response/fragments"),
            frag,
        )
        .unwrap();
        let last = slash_path("response/fragments/-1/content");
        apply(&mut doc, Op::Append, &last, json!("m…")).unwrap();
        apply(
            &mut doc,
            Op::Replace,
            &slash_path("response/status"),
            json!("FINISHED"),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"response": {"fragments": [{"type": "THINK", "content": "Hmm…"}], "status": "FINISHED"}})
        );
        // The whole document, and a path under a member that does not exist yet.
        apply(&mut doc, Op::Replace, &[], json!({})).unwrap();
        apply(&mut doc, Op::Replace, &slash_path("a/b"), json!(1)).unwrap();
        assert_eq!(doc, json!({"a": {"b": 1}}));
        // A list that does not exist yet, appended to by position.
        apply(&mut doc, Op::Add, &pointer("/chunks/-"), json!("x")).unwrap();
        apply(&mut doc, Op::Add, &pointer("/goals/0"), json!({"d": 1})).unwrap();
        assert_eq!(
            doc,
            json!({"a": {"b": 1}, "chunks": ["x"], "goals": [{"d": 1}]})
        );
    }
}
