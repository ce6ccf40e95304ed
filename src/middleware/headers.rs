//! Header edits (Traefik's `headers` middleware, custom request/response headers): set, append
//! and remove, applied in that order. Values are validated when the script declares them, so
//! applying never fails. Must never: touch the `Host` header or the forwarding headers the proxy
//! set (that is what `request_header` would break); the script API refuses those names.

use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub append: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.append {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.append.is_empty() && self.remove.is_empty()
    }

    /// `set X-A: 1, append X-B: 2, remove X-C`.
    pub fn describe(&self) -> String {
        let show = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        let mut parts = Vec::new();
        for (n, v) in &self.set {
            parts.push(format!("set {n}: {}", show(v)));
        }
        for (n, v) in &self.append {
            parts.push(format!("append {n}: {}", show(v)));
        }
        for n in &self.remove {
            parts.push(format!("remove {n}"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_append_remove_in_order() {
        let ops = HeaderOps {
            set: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("1"),
            )],
            append: vec![(
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("2"),
            )],
            remove: vec![HeaderName::from_static("x-c")],
        };
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        ops.apply(&mut h);
        assert_eq!(h.get("x-a").unwrap(), "1");
        let b: Vec<_> = h.get_all("x-b").iter().collect();
        assert_eq!(b, vec!["1", "2"]);
        assert!(h.get("x-c").is_none());
        assert_eq!(ops.describe(), "set x-a: 1, append x-b: 2, remove x-c");
    }
}
