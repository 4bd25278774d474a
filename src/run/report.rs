//! What a running engine reports about itself: the Prometheus text of `/metrics` and the
//! answers to `flowtwin ctl` commands, both read from the `Observed` state the engine
//! publishes.

use std::sync::atomic::Ordering;

use flowtwin_engine::counters::{write_latency_histogram, Counters, Drop, Event, LATENCY_SLOTS};
use flowtwin_engine::dataplane::RoleShared;
use flowtwin_engine::group::GroupId;
use flowtwin_engine::tcp::State;
use flowtwin_sync::{Role, SyncStatus};

use super::Observed;
use crate::metrics::{family, sample};

/// A port counter family: metric name, help text, and how to read it.
type PortFamily = (&'static str, &'static str, fn(&flowtwin_ffi::PortStats) -> u64);

pub(super) fn render(o: &Observed, out: &mut String) {
    family(out, "flowtwin_up", "gauge", "1 while the engine runs");
    sample(out, "flowtwin_up", &[], 1);
    super::proxy::render(&o.proxies(), out);
    if let Some(st) = &o.sync {
        st.render_prometheus(out);
    }
    if let Some(h) = o.held.get() {
        family(out, "flowtwin_held_outputs", "gauge", "frames held until the standby acknowledges their state (output commit)");
        sample(out, "flowtwin_held_outputs", &[], h.iter().map(|w| w.held()).sum::<u64>());
    }
    if let Some((rx_fanout, tx_fanin)) = o.software.get() {
        family(out, "flowtwin_software_rss", "gauge", "1 if worker 0 distributes flows to the other workers in software (the device has fewer RX queues than workers)");
        sample(out, "flowtwin_software_rss", &[], *rx_fanout as u8);
        family(out, "flowtwin_software_tx_fanin", "gauge", "1 if workers other than 0 transmit through worker 0's TX queue (the device has fewer TX queues than workers)");
        sample(out, "flowtwin_software_tx_fanin", &[], *tx_fanin as u8);
    }
    if let Some(r) = o.role.get() {
        family(out, "flowtwin_flows_resumed_total", "counter", "flows installed from the replica at takeovers");
        sample(out, "flowtwin_flows_resumed_total", &[], r.flows_resumed.load(Ordering::Relaxed));
        family(
            out,
            "flowtwin_flows_abandoned_total",
            "counter",
            "replicated flows lost at takeovers: not installable, or found stale by the client's first ACK",
        );
        sample(out, "flowtwin_flows_abandoned_total", &[], abandoned(o, r));
        family(out, "flowtwin_active", "gauge", "1 if this engine answers for (owns) any of its ownership groups");
        sample(out, "flowtwin_active", &[], r.is_active() as u8);
        family(out, "flowtwin_group_owned", "gauge", "1 if this engine owns the ownership group now (answers for its VIPs)");
        let owned = r.owned();
        for (i, g) in o.groups.iter().enumerate() {
            sample(out, "flowtwin_group_owned", &[("group", g)], owned.contains(GroupId(i as u8)) as u8);
        }
    }
    family(out, "flowtwin_capture_frames_total", "counter", "frames the workers offered to a running ctl capture: queued for its file, or dropped (its queue was full)");
    sample(out, "flowtwin_capture_frames_total", &[("result", "queued")], o.tap.captured.load(Ordering::Relaxed));
    sample(out, "flowtwin_capture_frames_total", &[("result", "dropped")], o.tap.dropped.load(Ordering::Relaxed));
    let r = &o.reloader;
    family(out, "flowtwin_config_reloads_total", "counter", "live reloads of the config file (ctl reload, SIGHUP), applied or refused");
    sample(out, "flowtwin_config_reloads_total", &[("result", "applied")], r.applied.load(Ordering::Relaxed));
    sample(out, "flowtwin_config_reloads_total", &[("result", "refused")], r.refused.load(Ordering::Relaxed));
    family(out, "flowtwin_config_generation", "gauge", "configurations published by reloads since the start (0: the one started with)");
    sample(out, "flowtwin_config_generation", &[], r.generation());
    family(out, "flowtwin_vip_info", "gauge", "1 for each VIP this engine serves, with its ownership group");
    for (v, g) in &o.vips() {
        sample(out, "flowtwin_vip_info", &[("vip", &v.to_string()), ("group", g)], 1);
    }
    if let Some(ports) = o.ports.get() {
        let fams: [PortFamily; 8] = [
            ("flowtwin_port_rx_packets_total", "packets received by the port", |s| s.ipackets),
            ("flowtwin_port_tx_packets_total", "packets sent by the port", |s| s.opackets),
            ("flowtwin_port_rx_bytes_total", "bytes received", |s| s.ibytes),
            ("flowtwin_port_tx_bytes_total", "bytes sent", |s| s.obytes),
            ("flowtwin_port_rx_missed_total", "packets the device dropped for lack of RX descriptors (imissed)", |s| s.imissed),
            ("flowtwin_port_rx_nombuf_total", "RX mbuf allocation failures", |s| s.rx_nombuf),
            ("flowtwin_port_rx_errors_total", "erroneous received packets", |s| s.ierrors),
            ("flowtwin_port_tx_errors_total", "failed transmissions", |s| s.oerrors),
        ];
        let stats: Vec<_> = ports.iter().map(|p| (p, p.stats().ok())).collect();
        for (name, help, f) in fams {
            family(out, name, "counter", help);
            for (p, s) in &stats {
                if let Some(s) = s {
                    sample(out, name, &[("port", &p.id().0.to_string()), ("name", &p.info().name)], f(s));
                }
            }
        }
        family(out, "flowtwin_queue_rx_packets_total", "counter", "packets received per RX queue");
        for (p, s) in &stats {
            if let Some(s) = s {
                for (q, v) in s.q_ipackets.iter().enumerate() {
                    sample(out, "flowtwin_queue_rx_packets_total", &[("port", &p.id().0.to_string()), ("queue", &q.to_string())], v);
                }
            }
        }
        family(out, "flowtwin_queue_tx_packets_total", "counter", "packets sent per TX queue");
        for (p, s) in &stats {
            if let Some(s) = s {
                for (q, v) in s.q_opackets.iter().enumerate() {
                    sample(out, "flowtwin_queue_tx_packets_total", &[("port", &p.id().0.to_string()), ("queue", &q.to_string())], v);
                }
            }
        }
        family(out, "flowtwin_port_link_up", "gauge", "1 if the link is up (a software port: its kernel interface's carrier)");
        for (p, _) in &stats {
            sample(out, "flowtwin_port_link_up", &[("port", &p.id().0.to_string())], o.link_up.load(Ordering::Relaxed));
        }
        family(
            out,
            "flowtwin_link_down_handovers_total",
            "counter",
            "handovers to the standby asked for because the port's link was down (sync.link_down_ms)",
        );
        sample(out, "flowtwin_link_down_handovers_total", &[], o.link_down_handovers.load(Ordering::Relaxed));
    }
    if let Some(ws) = o.workers.get() {
        let snaps: Vec<Counters> = ws.iter().map(|w| w.snapshot()).collect();
        family(out, "flowtwin_drops_total", "counter", "frames dropped, by reason and worker");
        for (i, c) in snaps.iter().enumerate() {
            for r in Drop::ALL {
                sample(out, "flowtwin_drops_total", &[("worker", &i.to_string()), ("reason", r.as_str())], c.dropped(*r));
            }
        }
        for e in Event::ALL {
            if matches!(e, Event::FlowsResumed | Event::FlowsAbandoned) {
                // Reported once per engine (flowtwin_flows_{resumed,abandoned}_total), with the
                // flows no worker could take included.
                continue;
            }
            let name = format!("flowtwin_{}_total", e.as_str());
            family(out, &name, "counter", "per worker");
            for (i, c) in snaps.iter().enumerate() {
                sample(out, &name, &[("worker", &i.to_string())], c.get(*e));
            }
        }
        for (name, help, pick) in [
            ("flowtwin_service_bytes_in_total", "payload bytes delivered to each service", true),
            ("flowtwin_service_bytes_out_total", "new payload bytes each service sent (retransmissions excluded)", false),
        ] {
            family(out, name, "counter", help);
            // One series per service: a reload's retired and new listeners of one address
            // and kind add up.
            let services = o.services();
            let mut seen: Vec<(&str, &str, u64)> = Vec::new();
            for (li, (svc, kind)) in services.iter().enumerate().take(flowtwin_engine::counters::MAX_SERVICES) {
                let v: u64 = snaps.iter().map(|c| if pick { c.svc_bytes_in[li] } else { c.svc_bytes_out[li] }).sum();
                match seen.iter_mut().find(|(s, k, _)| s == svc && k == kind) {
                    Some(e) => e.2 += v,
                    None => seen.push((svc, kind, v)),
                }
            }
            for (svc, kind, v) in seen {
                sample(out, name, &[("service", svc), ("kind", kind)], v);
            }
        }
        if o.held.get().is_some() {
            let mut counts = [0u64; LATENCY_SLOTS];
            for c in &snaps {
                for (a, b) in counts.iter_mut().zip(c.hold_us.iter()) {
                    *a += b;
                }
            }
            let sum = snaps.iter().map(|c| c.hold_us_sum).sum();
            write_latency_histogram(
                out,
                "flowtwin_output_hold_us",
                "output commit: how long frames waited for the standby's acknowledgement before leaving, all workers",
                &counts,
                sum,
            );
        }
        family(out, "flowtwin_flows", "gauge", "live flows by TCP state and worker");
        for (i, c) in snaps.iter().enumerate() {
            for s in LIVE_STATES {
                sample(out, "flowtwin_flows", &[("worker", &i.to_string()), ("state", state_name(s))], c.flows_by_state[s as usize]);
            }
        }
    }
}

/// The states a live flow can be in (Closed flows are freed), as metrics and ctl list them.
const LIVE_STATES: [State; 9] = [
    State::SynSent,
    State::SynReceived,
    State::Established,
    State::FinWait1,
    State::FinWait2,
    State::Closing,
    State::TimeWait,
    State::CloseWait,
    State::LastAck,
];

fn state_name(s: State) -> &'static str {
    match s {
        State::SynSent => "syn_sent",
        State::SynReceived => "syn_received",
        State::Established => "established",
        State::FinWait1 => "fin_wait_1",
        State::FinWait2 => "fin_wait_2",
        State::Closing => "closing",
        State::TimeWait => "time_wait",
        State::CloseWait => "close_wait",
        State::LastAck => "last_ack",
        State::Closed => "closed",
    }
}

/// Flows lost at takeovers: those the workers could not install, plus those a worker reset
/// because the client proved the replica stale (async mode).
fn abandoned(o: &Observed, r: &RoleShared) -> u64 {
    let stale: u64 = o.workers.get().map(|ws| ws.iter().map(|w| w.snapshot().get(Event::FlowsAbandoned)).sum()).unwrap_or(0);
    r.flows_abandoned.load(Ordering::Relaxed) + stale
}

/// Answer one control-socket command.
pub(super) fn control(o: &Observed, st: &SyncStatus, cmd: &str) -> String {
    let flows = |o: &Observed| -> serde_json::Value {
        let Some(ws) = o.workers.get() else { return serde_json::json!([]) };
        ws.iter()
            .map(|w| {
                let c = w.snapshot();
                let by: serde_json::Map<String, serde_json::Value> = LIVE_STATES
                    .iter()
                    .map(|s| (state_name(*s).to_string(), serde_json::json!(c.flows_by_state[*s as usize])))
                    .collect();
                serde_json::Value::Object(by)
            })
            .collect()
    };
    match cmd {
        "status" => {
            let held: u64 = o.held.get().map(|h| h.iter().map(|w| w.held()).sum()).unwrap_or(0);
            let (resumed, abandoned, active) = o
                .role
                .get()
                .map(|r| (r.flows_resumed.load(Ordering::Relaxed), abandoned(o, r), r.is_active()))
                .unwrap_or((0, 0, false));
            let owned = o.role.get().map(|r| r.owned()).unwrap_or_default();
            let groups: serde_json::Map<String, serde_json::Value> = o
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| (g.clone(), serde_json::json!(if owned.contains(GroupId(i as u8)) { "owned" } else { "standby" })))
                .collect();
            let mut prom = String::new();
            st.render_prometheus(&mut prom);
            let metric = |name: &str| -> f64 {
                prom.lines()
                    .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            };
            serde_json::json!({
                "role": st.role().name(),
                "active": active,
                "groups": groups,
                "epoch": st.epoch(),
                "peer": st.peer_state().name(),
                "in_sync": st.in_sync(),
                "sync_lag_records": metric("flowtwin_sync_lag_records"),
                "sync_lag_us": metric("flowtwin_sync_lag_us"),
                "held_outputs": held,
                "heartbeats_missed": metric("flowtwin_sync_heartbeats_missed_total"),
                "takeovers": metric("flowtwin_sync_takeovers_total"),
                "flows_resumed": resumed,
                "flows_abandoned": abandoned,
                "last_error": st.last_error(),
                "flows": flows(o),
            })
            .to_string()
        }
        "flows" => serde_json::json!({ "workers": flows(o) }).to_string(),
        "backends" => super::proxy::backends_json(&o.proxies()),
        c if c.starts_with("backend ") => {
            let words: Vec<&str> = c.split_whitespace().skip(1).collect();
            let owned = |svc: &str| -> bool {
                let Some(r) = o.role.get() else { return false };
                let vip: Option<std::net::Ipv4Addr> = svc.rsplit_once(':').and_then(|(v, _)| v.parse().ok());
                let vips = o.vips();
                let group = vip.and_then(|v| vips.iter().find(|(a, _)| *a == v)).and_then(|(_, g)| o.groups.iter().position(|n| n == g));
                group.is_some_and(|g| r.owned().contains(GroupId(g as u8)))
            };
            super::proxy::backend_cmd(&o.proxies(), &owned, &words)
        }
        "takeover" => {
            if st.role() == Role::Active {
                return r#"{"error":"this engine is already active"}"#.into();
            }
            st.request_takeover();
            r#"{"ok":"takeover requested"}"#.into()
        }
        "failback" => {
            if st.role() != Role::Active {
                return r#"{"error":"failback is run on the active engine"}"#.into();
            }
            if !st.in_sync() {
                return format!(r#"{{"error":"the peer is not in sync (peer state {}): failback would lose flows"}}"#, st.peer_state().name());
            }
            st.request_handover();
            r#"{"ok":"handover requested: the peer takes the VIPs, this engine becomes its standby"}"#.into()
        }
        _ => r#"{"error":"unknown command"}"#.into(),
    }
}
