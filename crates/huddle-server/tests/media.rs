//! The media peer's HTTP surface over real sockets: `POST /offer` (aiortc's contract), WHIP and
//! WHEP, and every way a request can be wrong. (Media itself flows in the browser tests.)

mod common;

use common::TestServer;
use huddle_server::{Config, MediaConfig};

fn fixture(name: &str) -> String {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../huddle-media/tests/fixtures"
    );
    std::fs::read_to_string(format!("{dir}/{name}")).unwrap()
}

async fn server(token: Option<&str>) -> TestServer {
    server_with(token, huddle_server::Limits::default()).await
}

async fn server_with(token: Option<&str>, limits: huddle_server::Limits) -> TestServer {
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    config.limits = limits;
    let mut media = MediaConfig::new("127.0.0.1:0".parse().unwrap());
    media.whip_token = token.map(str::to_owned);
    // The cap holds across workers: the rooms below land on either.
    media.workers = 2;
    media.max_sessions = 3;
    config.media = Some(media);
    TestServer::with(config).await
}

fn offer_json(sdp: &str, kind: &str, transform: &str) -> Vec<u8> {
    serde_json::json!({ "sdp": sdp, "type": kind, "video_transform": transform })
        .to_string()
        .into_bytes()
}

/// A WHIP/WHEP request with one of the Chromium offers.
async fn post_sdp(s: &TestServer, path: &str, offer: &str) -> common::Response {
    s.request("POST", path, &[SDP], fixture(offer).as_bytes())
        .await
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const SDP: (&str, &str) = ("Content-Type", "application/sdp");

#[tokio::test]
async fn offer_is_answered_in_aiortcs_shape_with_the_servers_candidate() {
    let s = server(None).await;
    let body = offer_json(&fixture("chromium-sendrecv.sdp"), "offer", "edges");
    let r = s.request("POST", "/offer", &[JSON], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let answer: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(answer["type"], "answer");
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("typ host"), "{sdp}");
    assert!(sdp.contains("127.0.0.1"), "{sdp}");
    assert!(sdp.contains("H264/90000"), "{sdp}");
}

#[tokio::test]
async fn bad_offers_get_4xx_saying_what_is_wrong() {
    let s = server(None).await;
    let sendrecv = fixture("chromium-sendrecv.sdp");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not an offer in JSON"),
        (b"{\"type\":\"offer\"}".to_vec(), "missing field `sdp`"),
        (
            offer_json(&sendrecv, "answer", "none"),
            "\"type\" must be \"offer\"",
        ),
        (
            offer_json(&sendrecv, "offer", "sepia"),
            "unknown video_transform \"sepia\"",
        ),
        (
            offer_json("v=0\r\nnonsense", "offer", "none"),
            "does not parse",
        ),
        (
            offer_json(&fixture("chromium-audioonly.sdp"), "offer", "none"),
            "no video track",
        ),
    ];
    for (body, expected) in cases {
        let r = s.request("POST", "/offer", &[JSON], &body).await;
        assert_eq!(r.status, 400, "{expected}: {}", r.body);
        let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let message = err["error"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "wanted {expected:?} in {message:?}"
        );
        assert!(
            !message.contains("0x"),
            "no pointers in messages: {message}"
        );
    }
    let big = vec![b'x'; 100 * 1024];
    let r = s.request("POST", "/offer", &[JSON], &big).await;
    assert_eq!(r.status, 413, "an oversized body is refused before parsing");
    // The server still serves.
    let body = offer_json(&sendrecv, "offer", "none");
    assert_eq!(
        s.request("POST", "/offer", &[JSON], &body).await.status,
        200
    );
}

#[tokio::test]
async fn whip_creates_a_resource_that_delete_ends() {
    let s = server(None).await;
    let r = post_sdp(&s, "/whip/stage", "chromium-sendonly.sdp").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    assert!(r.body.starts_with("v=0"), "{}", r.body);
    let location = r.header("location").unwrap().to_owned();
    assert!(location.starts_with("/whip/stage/"), "{location}");
    assert!(
        location.len() > "/whip/stage/".len() + 30,
        "unguessable: {location}"
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // One publisher per room.
    let second = post_sdp(&s, "/whip/stage", "chromium-sendonly.sdp").await;
    assert_eq!(second.status, 409, "{}", second.body);
    assert!(second.body.contains("already has a publisher"));

    // A viewer for the room.
    let watch = post_sdp(&s, "/whep/stage", "chromium-recvonly.sdp").await;
    assert_eq!(watch.status, 201, "{}", watch.body);
    assert!(
        watch
            .header("location")
            .unwrap()
            .starts_with("/whep/stage/")
    );

    let (_, metrics) = s.get("/metrics").await;
    assert!(
        metrics.contains("huddle_media_sessions{kind=\"publish\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("huddle_media_sessions{kind=\"watch\"} 1"),
        "{metrics}"
    );

    assert_eq!(
        s.request(
            "PATCH",
            &location,
            &[("Content-Type", "application/trickle-ice-sdpfrag")],
            b"a=x"
        )
        .await
        .status,
        405
    );
    assert_eq!(s.request("DELETE", &location, &[], b"").await.status, 200);
    assert_eq!(
        s.request("DELETE", &location, &[], b"").await.status,
        404,
        "gone"
    );
    let (_, metrics) = s.get("/metrics").await;
    assert!(
        metrics.contains("huddle_media_sessions{kind=\"publish\"} 0"),
        "{metrics}"
    );
    // The room is free for the next publisher.
    let again = post_sdp(&s, "/whip/stage", "chromium-sendonly.sdp").await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        s.request(
            "DELETE",
            "/whip/stage/0123456789abcdef0123456789abcdef",
            &[],
            b""
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn whip_refuses_wrong_type_bad_room_and_too_many_sessions() {
    let s = server(None).await;
    let sdp = fixture("chromium-sendonly.sdp");
    let r = s
        .request("POST", "/whip/stage", &[JSON], sdp.as_bytes())
        .await;
    assert_eq!(r.status, 415);
    assert!(r.body.contains("application/sdp"), "{}", r.body);
    let r = s
        .request("POST", "/whip/bad%20room!", &[SDP], sdp.as_bytes())
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.request("OPTIONS", "/whip/stage", &[], b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
    // The server allows 3 sessions.
    for room in ["a", "b", "c"] {
        let r = s
            .request("POST", &format!("/whip/{room}"), &[SDP], sdp.as_bytes())
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = s.request("POST", "/whip/d", &[SDP], sdp.as_bytes()).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("limit"), "{}", r.body);
}

#[tokio::test]
async fn whip_and_whep_need_the_bearer_token_when_one_is_set() {
    let s = server(Some("s3cret")).await;
    let sdp = fixture("chromium-sendonly.sdp");
    let r = s
        .request("POST", "/whip/stage", &[SDP], sdp.as_bytes())
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("bearer"));
    let wrong = s
        .request(
            "POST",
            "/whep/stage",
            &[SDP, ("Authorization", "Bearer nope")],
            sdp.as_bytes(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let ok = s
        .request(
            "POST",
            "/whip/stage",
            &[SDP, ("Authorization", "Bearer s3cret")],
            sdp.as_bytes(),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let location = ok.header("location").unwrap().to_owned();
    assert_eq!(s.request("DELETE", &location, &[], b"").await.status, 401);
    assert_eq!(
        s.request(
            "DELETE",
            &location,
            &[("Authorization", "Bearer s3cret")],
            b""
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn without_the_media_peer_the_endpoints_say_so() {
    let s = TestServer::start().await;
    let body = offer_json(&fixture("chromium-sendrecv.sdp"), "offer", "none");
    let r = s.request("POST", "/offer", &[JSON], &body).await;
    assert_eq!(r.status, 503);
    let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("turned off"),
        "{}",
        r.body
    );
    let r = s.request("POST", "/whip/stage", &[SDP], b"v=0").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("turned off"), "{}", r.body);
}

#[tokio::test]
async fn oversize_bodies_get_the_413_not_a_reset_on_http1_and_http2() {
    // Forty requests from one address: past the default rate budget, which is not the subject.
    let limits = huddle_server::Limits {
        api_burst: 100,
        ..huddle_server::Limits::default()
    };
    let s = server_with(None, limits).await;
    let big = offer_json(&"v=0\r\n".repeat(60_000), "offer", "none");
    assert!(big.len() > 256 * 1024);
    for _ in 0..20 {
        let r = s.request("POST", "/offer", &[JSON], &big).await;
        assert_eq!(r.status, 413);
        let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains("64 KiB"),
            "{}",
            r.body
        );
    }
    // HTTP/2 (prior knowledge), all on one connection.
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..20 {
        let req = hyper::Request::post(format!("http://{}/offer", s.addr))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(big.clone())))
            .unwrap();
        let response = h2.send_request(req).await.expect("an answer, not a reset");
        assert_eq!(response.status(), 413);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(err["error"].as_str().unwrap().contains("64 KiB"));
    }
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_offer_of_hundreds_of_media_sections_is_refused_naming_the_limit() {
    let s = server(None).await;
    let sendrecv = fixture("chromium-sendrecv.sdp");
    let (head, _) = sendrecv.split_at(sendrecv.find("m=").unwrap());
    let mut bloated = head.to_owned();
    for mid in 0..550 {
        bloated.push_str(&format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n"
        ));
    }
    assert!(bloated.len() < 64 * 1024);
    let r = s
        .request("POST", "/whip/stage", &[SDP], bloated.as_bytes())
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("550 media sections"), "{}", r.body);
    assert!(r.body.contains("at most 16"), "{}", r.body);
    // Nothing was kept: a real offer still gets the one slot left of three.
    assert_eq!(
        post_sdp(&s, "/whip/stage", "chromium-sendonly.sdp")
            .await
            .status,
        201
    );
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_address_holds_a_bounded_share_of_media_sessions() {
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    let mut media = MediaConfig::new("127.0.0.1:0".parse().unwrap());
    media.max_sessions_per_client = 2;
    config.media = Some(media);
    let s = TestServer::with(config).await;
    let offer = fixture("chromium-sendrecv.sdp");
    let body = offer_json(&offer, "offer", "none");
    for _ in 0..2 {
        assert_eq!(
            s.request("POST", "/offer", &[JSON], &body).await.status,
            200
        );
    }
    let r = s.request("POST", "/offer", &[JSON], &body).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.body.contains("the most one address may hold"),
        "{}",
        r.body
    );
    s.shutdown().await.unwrap();
}

/// The port of the answer's host candidate: which media worker took the session.
fn candidate_port(sdp: &str) -> u16 {
    let line = sdp
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.contains("typ host"))
        .unwrap_or_else(|| panic!("no host candidate in {sdp}"));
    let fields: Vec<&str> = line.split(' ').collect();
    fields[5].parse().unwrap()
}

#[tokio::test]
async fn a_room_lives_on_one_media_worker_and_echo_sessions_take_turns() {
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    let mut media = MediaConfig::new("127.0.0.1:0".parse().unwrap());
    media.workers = 2;
    config.media = Some(media);
    let s = TestServer::with(config).await;
    let body = offer_json(&fixture("chromium-sendrecv.sdp"), "offer", "none");
    let mut echo_ports = Vec::new();
    for _ in 0..2 {
        let r = s.request("POST", "/offer", &[JSON], &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let answer: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        echo_ports.push(candidate_port(answer["sdp"].as_str().unwrap()));
    }
    assert_ne!(echo_ports[0], echo_ports[1], "one session on each worker");
    // Every publisher and viewer of a room reaches the same worker, whichever it is.
    for room in ["stage", "hall", "studio"] {
        let publish = post_sdp(&s, &format!("/whip/{room}"), "chromium-sendonly.sdp").await;
        assert_eq!(publish.status, 201, "{}", publish.body);
        let port = candidate_port(&publish.body);
        for _ in 0..2 {
            let watch = post_sdp(&s, &format!("/whep/{room}"), "chromium-recvonly.sdp").await;
            assert_eq!(watch.status, 201, "{}", watch.body);
            assert_eq!(candidate_port(&watch.body), port, "{room} is on one worker");
        }
        assert!(echo_ports.contains(&port));
    }
    s.shutdown().await.unwrap();
}
