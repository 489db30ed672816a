//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write;

use huddle_signal_proto::{ErrorCode, Stats};

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
