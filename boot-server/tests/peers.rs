//! `POST /peers` and `GET /peers?image=` against a real bootd: a claim is
//! recorded under the connection's source address (a claimed address in
//! the body is ignored), the asker is left out, and bad input gets a 400
//! that names the field.
mod common;
use common::{http, Bootd};

const IMG: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn peers(port: u16, query: &str) -> (u16, serde_json::Value) {
    let (st, _, body) = http(port, "GET", &format!("/peers?{query}"), &[], b"");
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (st, v)
}

#[test]
fn claims_are_bound_to_the_source_address() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let b = Bootd::start(d.path(), &["--root".as_ref(), www.as_os_str()]);
    let ct = ["Content-Type: application/json"];
    // A claimed address in the body is ignored: the claim is 127.0.0.1's.
    let body = format!(r#"{{"image":"{IMG}","port":7001,"addr":"192.0.2.7"}}"#);
    let (st, _, _) = http(b.port, "POST", "/peers", &ct, body.as_bytes());
    assert_eq!(st, 204);
    let body = format!(r#"{{"image":"{IMG}","port":7002}}"#);
    assert_eq!(http(b.port, "POST", "/peers", &ct, body.as_bytes()).0, 204);
    // The asker on port 7002 sees the other claim only.
    let (st, v) = peers(b.port, &format!("image={IMG}&port=7002"));
    assert_eq!(st, 200);
    assert_eq!(v["peers"], serde_json::json!(["127.0.0.1:7001"]));
    // Without its port, every claim of its address is left out.
    let (_, v) = peers(b.port, &format!("image={IMG}"));
    assert_eq!(v["peers"], serde_json::json!([]));
    // Bounded per address: 4 claims, then 429.
    for p in 7003..=7004 {
        let body = format!(r#"{{"image":"{IMG}","port":{p}}}"#);
        assert_eq!(http(b.port, "POST", "/peers", &ct, body.as_bytes()).0, 204);
    }
    let body = format!(r#"{{"image":"{IMG}","port":7005}}"#);
    let (st, _, msg) = http(b.port, "POST", "/peers", &ct, body.as_bytes());
    assert_eq!(st, 429);
    assert_eq!(
        String::from_utf8_lossy(&msg),
        "429 Too Many Requests: 127.0.0.1 already has 4 live claims\n"
    );
    // Bad input: the field is named.
    let (st, _, msg) = http(
        b.port,
        "POST",
        "/peers",
        &ct,
        br#"{"image":"abc","port":1}"#,
    );
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&msg).starts_with("image: \"abc\" is not a sha256"));
    let (st, _, msg) = http(b.port, "GET", "/peers", &[], b"");
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&msg).contains("image: missing"));
    let (st, _, msg) = http(
        b.port,
        "GET",
        &format!("/peers?image={IMG}&port=0"),
        &[],
        b"",
    );
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&msg).contains("port: not a number"));
    let big = vec![b' '; 2000];
    assert_eq!(http(b.port, "POST", "/peers", &ct, &big).0, 413);
    assert_eq!(http(b.port, "DELETE", "/peers", &[], b"").0, 405);
}
