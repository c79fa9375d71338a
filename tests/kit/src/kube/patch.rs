//! Patch application: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::Value;

/// Why a JSON patch could not be applied; the text matches the Go jsonpatch library's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// The patch document is not a list of valid operations.
    Malformed(String),
    /// An operation could not be applied (missing path, failed `test`, ...).
    Apply(String),
}

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatchError::Malformed(m) | PatchError::Apply(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PatchError {}

/// Applies an RFC 7386 merge patch: objects merge recursively, `null` deletes, anything else
/// (lists included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Applies a strategic merge patch to a built-in object, as far as the emulated types need it:
/// objects merge like a merge patch; `metadata.finalizers` is a set (union, with
/// `$deleteFromPrimitiveList/finalizers` removing); `metadata.ownerReferences` merge by `uid`
/// and a ServiceAccount's `secrets` by `name` (with `$patch: delete` items removing). Every
/// other list is replaced, which is what the Go types declare for `imagePullSecrets`.
/// Simplification: `$retainKeys`, `$setElementOrder` and other directives are ignored.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value, plural: &str) {
    let mut patch = patch.clone();
    let mut meta_patch = patch
        .as_object_mut()
        .and_then(|p| p.remove("metadata"))
        .unwrap_or(Value::Null);
    let sa_secrets = if plural == "serviceaccounts" {
        patch.as_object_mut().and_then(|p| p.remove("secrets"))
    } else {
        None
    };
    merge_patch(target, &patch);
    if let Some(items) = sa_secrets {
        merge_list_by_key(&mut target["secrets"], &items, "name");
    }
    let Some(m) = meta_patch.as_object_mut() else {
        if meta_patch.is_null() {
            return;
        }
        target["metadata"] = meta_patch;
        return;
    };
    let remove_finalizers = m.remove("$deleteFromPrimitiveList/finalizers");
    let finalizers = m.remove("finalizers");
    let owners = m.remove("ownerReferences");
    merge_patch(&mut target["metadata"], &meta_patch);
    if let Some(Value::Array(add)) = finalizers {
        let list = target["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        target["metadata"]["finalizers"] = Value::Array(merge_primitive_list(&list, &add));
    } else if let Some(Value::Null) = finalizers {
        if let Some(m) = target["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    }
    if let Some(Value::Array(drop)) = remove_finalizers {
        if let Some(list) = target["metadata"]["finalizers"].as_array_mut() {
            list.retain(|f| !drop.contains(f));
        }
    }
    if let Some(items) = owners {
        merge_list_by_key(&mut target["metadata"]["ownerReferences"], &items, "uid");
    }
}

/// Merges a list of scalars whose patch strategy is `merge`, in the order apimachinery's
/// `mergeSlice` gives: the union without duplicates, then patch items (in patch order) and
/// server-only items (in live order) interleaved, a server-only item going before a patch item
/// only when both are in the live list and it comes first there. So new items come first:
/// live `[a]` patched with `[b]` gives `[b, a]`, as the real server answers.
fn merge_primitive_list(live: &[Value], patch: &[Value]) -> Vec<Value> {
    let mut patch_items: Vec<Value> = Vec::new();
    for p in patch {
        if !patch_items.contains(p) {
            patch_items.push(p.clone());
        }
    }
    let mut server_only: Vec<Value> = Vec::new();
    for l in live {
        if !patch.contains(l) && !server_only.contains(l) {
            server_only.push(l.clone());
        }
    }
    let pos = |v: &Value| live.iter().position(|x| x == v);
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let (mut i, mut j) = (0, 0);
    while i < server_only.len() || j < patch_items.len() {
        let take_left = if i >= server_only.len() {
            false
        } else if j >= patch_items.len() {
            true
        } else {
            matches!((pos(&server_only[i]), pos(&patch_items[j])), (Some(l), Some(r)) if l < r)
        };
        if take_left {
            out.push(server_only[i].clone());
            i += 1;
        } else {
            out.push(patch_items[j].clone());
            j += 1;
        }
    }
    out
}

/// Merges a list of objects by a key field; `null` replaces the whole list (deletes it).
fn merge_list_by_key(target: &mut Value, items: &Value, key: &str) {
    let Value::Array(items) = items else {
        *target = items.clone();
        return;
    };
    let mut list = target.as_array().cloned().unwrap_or_default();
    for item in items {
        let k = &item[key];
        let pos = list.iter().position(|e| &e[key] == k);
        if item["$patch"] == "delete" {
            if let Some(i) = pos {
                list.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => merge_patch(&mut list[i], item),
            None => list.push(item.clone()),
        }
    }
    *target = Value::Array(list);
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if !path.starts_with('/') {
        return Err(PatchError::Apply(format!("invalid JSON pointer: {path:?}")));
    }
    Ok(path[1..].split('/').map(unescape).collect())
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, k| match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn parent_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path[..path.len() - 1].iter().try_fold(doc, |v, k| match v {
        Value::Object(m) => m.get_mut(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn missing(op: &str, path: &str) -> PatchError {
    PatchError::Apply(format!(
        "{op} operation does not apply: doc is missing path: \"{path}\": missing value"
    ))
}

fn add(doc: &mut Value, path: &[String], raw: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let last = &path[path.len() - 1];
    match parent_mut(doc, path) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| PatchError::Apply(format!("add operation does not apply: doc is missing path: \"{raw}\": invalid index")))?
            };
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(missing("add", raw)),
    }
}

fn remove(doc: &mut Value, path: &[String], raw: &str, op: &str) -> Result<Value, PatchError> {
    if path.is_empty() {
        return Err(missing(op, raw));
    }
    let last = &path[path.len() - 1];
    match parent_mut(doc, path) {
        Some(Value::Object(m)) => m.remove(last).ok_or_else(|| missing(op, raw)),
        Some(Value::Array(a)) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(|| missing(op, raw))?;
            Ok(a.remove(i))
        }
        _ => Err(missing(op, raw)),
    }
}

fn str_field<'a>(op: &'a Value, name: &str, opname: &str) -> Result<&'a str, PatchError> {
    op.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| PatchError::Malformed(format!("{opname} operation missing {name} field")))
}

/// Applies an RFC 6902 JSON patch, all or nothing.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch.as_array().ok_or_else(|| {
        PatchError::Malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
        )
    })?;
    let mut out = doc.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Malformed("unexpected kind: unknown".into()))?;
        let raw = str_field(op, "path", name)?;
        let path = split_pointer(raw)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("{name} operation missing value")))
        };
        match name {
            "add" => add(&mut out, &path, raw, value()?)?,
            "remove" => {
                remove(&mut out, &path, raw, "remove")?;
            }
            "replace" => {
                let v = value()?;
                if path.is_empty() {
                    out = v;
                } else {
                    if get(&out, &path).is_none() {
                        return Err(PatchError::Apply(format!(
                            "replace operation does not apply: doc is missing key: {raw}: missing value"
                        )));
                    }
                    remove(&mut out, &path, raw, "replace")?;
                    add(&mut out, &path, raw, v)?;
                }
            }
            "move" | "copy" => {
                let from_raw = str_field(op, "from", name)?;
                let from = split_pointer(from_raw)?;
                let v = if name == "move" {
                    remove(&mut out, &from, from_raw, name)?
                } else {
                    get(&out, &from)
                        .cloned()
                        .ok_or_else(|| missing(name, from_raw))?
                };
                add(&mut out, &path, raw, v)?;
            }
            "test" => {
                let expected = value()?;
                if get(&out, &path) != Some(&expected) {
                    return Err(PatchError::Apply(format!(
                        "testing value {raw} failed: test failed"
                    )));
                }
            }
            other => return Err(PatchError::Malformed(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_objects_replaces_lists_and_deletes_nulls() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1});
        merge_patch(
            &mut t,
            &json!({"a": {"b": null, "d": 3}, "l": [3], "x": null}),
        );
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_supports_every_op() {
        let doc = json!({"a": [1, 2], "b": {"c": "x"}});
        let p = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "replace", "path": "/b/c", "value": "y"},
            {"op": "copy", "from": "/b/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/1"},
            {"op": "test", "path": "/e", "value": "y"},
        ]);
        assert_eq!(
            json_patch(&doc, &p).unwrap(),
            json!({"a": [0, 2, 3], "b": {"c": "y"}, "e": "y"})
        );
    }

    #[test]
    fn failed_test_leaves_nothing_applied() {
        let doc = json!({"a": 1});
        let p = json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 1}]);
        let err = json_patch(&doc, &p).unwrap_err();
        assert_eq!(
            err,
            PatchError::Apply("testing value /a failed: test failed".into())
        );
    }

    #[test]
    fn remove_of_a_missing_path_fails() {
        assert!(matches!(
            json_patch(&json!({}), &json!([{"op": "remove", "path": "/x"}])),
            Err(PatchError::Apply(_))
        ));
        assert!(matches!(
            json_patch(&json!({}), &json!({"op": "remove"})),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn strategic_patch_unions_finalizers_and_merges_owners_by_uid() {
        let mut t = json!({"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]},
            "imagePullSecrets": [{"name": "p"}]});
        let p = json!({"metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "2", "name": "y"}]},
            "imagePullSecrets": [{"name": "q"}]});
        strategic_merge_patch(&mut t, &p, "serviceaccounts");
        assert_eq!(
            t["metadata"]["finalizers"],
            json!(["b", "a"]),
            "new items first, as the real server orders them"
        );
        assert_eq!(
            t["metadata"]["ownerReferences"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            t["imagePullSecrets"],
            json!([{"name": "q"}]),
            "imagePullSecrets has no merge strategy"
        );
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
            "serviceaccounts",
        );
        assert_eq!(t["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn primitive_lists_merge_in_apimachinerys_order() {
        let v = |l: &[&str]| l.iter().map(|s| json!(s)).collect::<Vec<_>>();
        assert_eq!(merge_primitive_list(&v(&["a"]), &v(&["b"])), v(&["b", "a"]));
        assert_eq!(
            merge_primitive_list(&v(&["a", "b", "c"]), &v(&["c", "a"])),
            v(&["b", "c", "a"])
        );
        assert_eq!(merge_primitive_list(&v(&["a"]), &v(&["a"])), v(&["a"]));
        assert_eq!(merge_primitive_list(&[], &v(&["x", "y"])), v(&["x", "y"]));
    }

    #[test]
    fn escaped_pointer_tokens_are_unescaped() {
        let doc = json!({"labels": {"a/b": "1", "m~n": "2"}});
        let p = json!([{"op": "remove", "path": "/labels/a~1b"}, {"op": "remove", "path": "/labels/m~0n"}]);
        assert_eq!(json_patch(&doc, &p).unwrap(), json!({"labels": {}}));
    }
}
