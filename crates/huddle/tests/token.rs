//! `huddle token create` and `huddle token verify` as a person runs them.

use std::process::Command;

const KEY: &str = "main:0123456789abcdef0123456789abcdef";

fn huddle(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args(args)
        .env_remove("HUDDLE_AUTH_KEYS")
        .env_remove("HUDDLE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_created_token_verifies_and_its_link_carries_it_in_the_fragment() {
    let (ok, out, err) = huddle(&[
        "token",
        "create",
        "--auth-key",
        KEY,
        "--room",
        "standup",
        "--identity",
        "ada",
        "--name",
        "Ada",
        "--ttl",
        "2h",
        "--admin",
        "--sources",
        "camera,microphone",
        "--url",
        "https://meet.example.org:8443/",
    ]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let token = lines.next().unwrap();
    let link = lines.next().unwrap();
    assert_eq!(
        link,
        format!("https://meet.example.org:8443/r/standup#token={token}")
    );

    let (ok, out, err) = huddle(&["token", "verify", "--auth-key", KEY, token]);
    assert!(ok, "{err}");
    assert!(out.contains("\"roomAdmin\": true"), "{out}");
    assert!(out.contains("\"canPublishSources\""), "{out}");
    assert!(out.contains("accepted into room \"standup\": ada"), "{out}");

    // Another room, or another server's key: refused, and it says why.
    let (ok, _, err) = huddle(&[
        "token",
        "verify",
        "--auth-key",
        KEY,
        "--room",
        "other",
        token,
    ]);
    assert!(!ok);
    assert!(err.contains("not \"other\""), "{err}");
    let other = "main:ffffffffffffffffffffffffffffffff";
    let (ok, _, err) = huddle(&["token", "verify", "--auth-key", other, token]);
    assert!(!ok);
    assert!(err.contains("signature"), "{err}");
}

#[test]
fn keys_come_from_the_serve_config_file_too() {
    let dir = std::env::temp_dir().join(format!("huddle-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("huddle.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:8443\"\nauth-keys = [\"{KEY}\"]\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (ok, out, err) = huddle(&[
        "token",
        "create",
        "-c",
        config,
        "--room",
        "r",
        "--identity",
        "i",
    ]);
    assert!(ok, "{err}");
    let token = out.lines().next().unwrap();
    let (ok, _, err) = huddle(&["token", "verify", "-c", config, token]);
    assert!(ok, "{err}");
    let (ok, _, err) = huddle(&["token", "create", "--room", "r", "--identity", "i"]);
    assert!(!ok);
    assert!(err.contains("no keys"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
