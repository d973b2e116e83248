//! JSON body path injection (`agentsecrets_core::inject::apply_json_body`), with the path
//! parsed the way the proxy parses it (`Injection::from_header("Body-a-b", KEY)`), and for
//! comparison the form and query injections that share its contract.
//!
//! Asserted: no panic; when the body is blank or a JSON object and the path runs only
//! through objects (or missing keys), injection succeeds, the output is JSON, the value at
//! the path is the secret as a string, and every other key at every level of the path is
//! unchanged; otherwise it fails. Paths are at most `MAX_BODY_PATH_SEGMENTS` deep (a deeper
//! one overflowed the stack when the body was serialized). A non-UTF-8 value is always
//! refused. Form and query injection leave exactly one pair of that name, holding the
//! value, after the kept pairs.
#![no_main]

use agentsecrets_core::inject::{
    InjectStyle, Injection, MAX_BODY_PATH_SEGMENTS, apply_form, apply_json_body, apply_query,
};
use agentsecrets_core::names::SecretKey;
use agentsecrets_core::secret::SecretValue;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Input {
    suffix: String,
    body: Vec<u8>,
    value: Vec<u8>,
    query: String,
}

fuzz_target!(|input: Input| {
    let key = SecretKey::parse("FUZZ_KEY").expect("valid key");
    let value = SecretValue::new(input.value.clone());
    let text = std::str::from_utf8(&input.value).ok();

    let Ok(injection) = Injection::from_header(&format!("Body-{}", input.suffix), "FUZZ_KEY")
    else {
        return;
    };
    let InjectStyle::Body(path) = &injection.style else { panic!("Body- parsed as another style") };
    assert!(!path.is_empty() && path.iter().all(|s| !s.is_empty() && !s.contains('.')));
    assert!(path.len() <= MAX_BODY_PATH_SEGMENTS, "a body path deeper than the limit parsed");

    let result = apply_json_body(&input.body, path, &key, &value);
    let Some(text) = text else {
        assert!(result.is_err(), "a non-UTF-8 value was injected into JSON");
        return;
    };
    let original: Option<Value> = if input.body.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Object(Default::default()))
    } else {
        serde_json::from_slice(&input.body).ok()
    };
    let expect_ok = original.as_ref().is_some_and(|root| path_through_objects(root, path));
    match result {
        Ok(out) => {
            assert!(expect_ok, "injection succeeded where the path crosses a non-object");
            let root: Value = serde_json::from_slice(&out).expect("output is JSON");
            let original = original.expect("checked above");
            let (mut old, mut new) = (Some(&original), &root);
            for (depth, segment) in path.iter().enumerate() {
                let new_map = new.as_object().expect("path runs through objects");
                if let Some(old_map) = old.and_then(Value::as_object) {
                    for (name, kept) in old_map {
                        if name != segment {
                            let now = new_map.get(name).expect("sibling kept");
                            assert!(same(kept, now), "sibling changed at depth {depth}");
                        }
                    }
                    let extra = usize::from(!old_map.contains_key(segment));
                    assert_eq!(new_map.len(), old_map.len() + extra, "keys added or lost");
                }
                old = old.and_then(|o| o.get(segment));
                new = &new_map[segment];
            }
            assert_eq!(new.as_str(), Some(text), "the value at the path is not the secret");
        }
        Err(_) => assert!(!expect_ok, "injection refused a valid object and path"),
    }

    // Form and query injection with the last segment as the field name.
    let field = path.last().expect("non-empty");
    if let Ok(out) = apply_form(&input.body, field, &key, &value) {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&out).into_owned().collect();
        let (last_name, last_value) = pairs.last().expect("the injected pair");
        assert_eq!((last_name.as_str(), last_value.as_str()), (field.as_str(), text));
        assert_eq!(pairs.iter().filter(|(n, _)| n == field).count(), 1);
    }
    if let Ok(mut url) = url::Url::parse(&format!("https://example.com/p?{}", input.query)) {
        apply_query(&mut url, field, &key, &value).expect("UTF-8 value goes into a query");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs.iter().filter(|(n, _)| n == field).count(), 1);
        let (last_name, last_value) = pairs.last().expect("the injected pair");
        assert_eq!((last_name.as_str(), last_value.as_str()), (field.as_str(), text));
    }
});

/// Whether injecting at `path` is possible: every existing node before the last is an
/// object, and the root is one.
fn path_through_objects(root: &Value, path: &[String]) -> bool {
    let mut node = Some(root);
    for segment in path {
        match node {
            Some(Value::Object(map)) => node = map.get(segment),
            Some(_) => return false,
            None => return true,
        }
    }
    true
}

/// Equality of JSON values, with floats compared to within rounding: without serde_json's
/// `float_roundtrip` feature, parsing a printed float may land one unit in the last place off.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
