//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write;

use huddle_signal_proto::{ErrorCode, Stats};

/// Which node of a cluster these figures are of (node ids need no escaping: see
/// `cluster::node::valid_id`).
pub fn render_node(node_id: &str) -> String {
    format!(
        "# HELP huddle_node_info This node of the cluster.\n\
         # TYPE huddle_node_info gauge\n\
         huddle_node_info{{node=\"{node_id}\"}} 1\n"
    )
}

pub fn render(stats: &Stats) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "huddle_rooms",
        "Rooms with at least one participant.",
        stats.rooms,
    );
    gauge(
        &mut out,
        "huddle_participants",
        "Participants in rooms, including ones awaiting resume.",
        stats.participants,
    );
    gauge(
        &mut out,
        "huddle_signaling_sockets",
        "Open signaling WebSockets.",
        stats.connections,
    );

    let _ = writeln!(
        out,
        "# HELP huddle_signaling_messages_received_total Well-formed client messages, by type."
    );
    let _ = writeln!(
        out,
        "# TYPE huddle_signaling_messages_received_total counter"
    );
    let mut kinds: Vec<_> = stats.messages_in.iter().collect();
    kinds.sort();
    for (kind, n) in kinds {
        let _ = writeln!(
            out,
            "huddle_signaling_messages_received_total{{type=\"{kind}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP huddle_signaling_messages_sent_total Messages queued to clients."
    );
    let _ = writeln!(out, "# TYPE huddle_signaling_messages_sent_total counter");
    let _ = writeln!(
        out,
        "huddle_signaling_messages_sent_total {}",
        stats.messages_out
    );

    let _ = writeln!(
        out,
        "# HELP huddle_signaling_errors_total Error messages sent to clients, by code."
    );
    let _ = writeln!(out, "# TYPE huddle_signaling_errors_total counter");
    for code in ErrorCode::ALL {
        let n = stats.errors.get(&code).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "huddle_signaling_errors_total{{code=\"{}\"}} {n}",
            code.as_str()
        );
    }
    out
}

/// The TURN server's counters.
pub fn render_turn(stats: &huddle_turn_proto::Stats, allocations: usize) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "huddle_turn_allocations",
        "TURN allocations in force.",
        allocations,
    );
    for (name, help, value) in [
        (
            "huddle_turn_allocations_created_total",
            "TURN allocations created.",
            stats.allocations_created,
        ),
        (
            "huddle_turn_relayed_to_peer_packets_total",
            "Datagrams relayed from clients to peers.",
            stats.to_peer_packets,
        ),
        (
            "huddle_turn_relayed_to_peer_bytes_total",
            "Payload bytes relayed from clients to peers.",
            stats.to_peer_bytes,
        ),
        (
            "huddle_turn_relayed_to_client_packets_total",
            "Datagrams relayed from peers to clients.",
            stats.to_client_packets,
        ),
        (
            "huddle_turn_relayed_to_client_bytes_total",
            "Payload bytes relayed from peers to clients.",
            stats.to_client_bytes,
        ),
        (
            "huddle_turn_dropped_total",
            "Packets dropped: no permission, over the bandwidth cap, malformed.",
            stats.dropped,
        ),
        (
            "huddle_turn_auth_failures_total",
            "Requests refused with 401.",
            stats.auth_failures,
        ),
        (
            "huddle_turn_error_responses_total",
            "Error responses sent.",
            stats.error_responses,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out
}

pub fn render_media(
    stats: &crate::media::MediaStats,
    counters: &crate::media::MediaCounters,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP huddle_media_sessions Media sessions, by kind.\n# TYPE huddle_media_sessions gauge"
    );
    for (kind, n) in [
        ("echo", stats.echo),
        ("publish", stats.publish),
        ("watch", stats.watch),
        ("sfu_upstream", stats.upstream),
        ("sfu_downstream", stats.downstream),
    ] {
        let _ = writeln!(out, "huddle_media_sessions{{kind=\"{kind}\"}} {n}");
    }
    for (name, help, value) in [
        (
            "huddle_media_sessions_created_total",
            "Media sessions created.",
            &counters.sessions_created,
        ),
        (
            "huddle_media_frames_transcoded_total",
            "Video frames transformed and encoded.",
            &counters.frames_transcoded,
        ),
        (
            "huddle_media_frames_skipped_total",
            "Frames decoded but not transformed because a newer one was waiting.",
            &counters.frames_skipped,
        ),
        (
            "huddle_media_frames_dropped_total",
            "Frames dropped on a full transcoder queue.",
            &counters.frames_dropped,
        ),
        (
            "huddle_media_datagrams_unmatched_total",
            "Datagrams on the media port that no session took.",
            &counters.datagrams_unmatched,
        ),
        (
            "huddle_media_datagrams_dropped_total",
            "Datagrams dropped because a media socket's send buffer stayed full.",
            &counters.datagrams_dropped,
        ),
    ] {
        let value = value.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out
}

fn gauge(out: &mut String, name: &str, help: &str, value: usize) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_error_code_and_gauges() {
        let mut stats = Stats {
            rooms: 2,
            ..Stats::default()
        };
        stats.messages_in.insert("join", 3);
        stats.errors.insert(ErrorCode::Flood, 1);
        let text = render(&stats);
        assert!(text.contains("huddle_rooms 2\n"));
        assert!(text.contains("huddle_signaling_messages_received_total{type=\"join\"} 3\n"));
        assert!(text.contains("huddle_signaling_errors_total{code=\"flood\"} 1\n"));
        assert!(text.contains("huddle_signaling_errors_total{code=\"bad-json\"} 0\n"));
    }
}
