//! The `Hello` of a [`Session`]: what this engine says of itself in its first frame, and
//! which peers' Hellos it accepts (`check_peer`: a refusal names both values). A standby
//! also adopts its active's opened-connection secret from it (`adopt_secret`).

use super::*;

impl Session {
    /// The Hello this engine sends as `role`.
    pub fn hello(&self, role: Role) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTO_VERSION,
            node_id: self.cfg.node_id,
            epoch: self.epoch,
            role,
            mode: self.cfg.mode.wire(),
            workers: self.cfg.workers as u16,
            heartbeat_us: micros(self.cfg.heartbeat),
            dead_after: self.cfg.dead_after,
            fence_hold_us: micros(self.cfg.fence_hold),
            handover_hold_us: micros(self.cfg.handover_hold),
            groups: self.stack_cfg.group_digest(),
            session: self.cfg.groups.0,
            secret: self.stack_cfg.open_secrets.get(self.secret_group()),
        }
    }

    /// The group whose opened-connection secret this session's `Hello` carries: its lowest
    /// (an active keeps one secret for all the groups it starts with; see
    /// `Session::adopt_secret` for what a standby does with it).
    fn secret_group(&self) -> GroupId {
        self.cfg.groups.iter().next().unwrap_or(GroupId::DEFAULT)
    }

    /// Standby: adopt the active's secret for the session's groups, so that the backend
    /// connections this engine opens after a takeover continue the active's ISNs and TSvals
    /// on every 4-tuple it used (`GroupSecrets`).
    pub(super) fn adopt_secret(&self, h: &Hello) {
        let changed = self.cfg.groups.iter().fold(false, |c, g| self.stack_cfg.open_secrets.adopt(g, h.secret) | c);
        if changed {
            tracing::info!(
                node = self.cfg.node_id,
                event = "secret_adopted",
                peer = h.node_id,
                "adopted the active's secret for the connections opened from groups {:#x}",
                self.cfg.groups.0
            );
        }
    }

    /// Whether a peer's Hello can start a session with this engine: same protocol, same
    /// output-commit mode, same heartbeat interval (a standby that expects heartbeats every
    /// 2 ms would declare an active beating every 5 ms dead) and dead-peer limit, in strict
    /// mode the same output holds (`fence_hold`, `handover_hold`), same ownership groups.
    /// The error names both values.
    pub fn check_peer(&self, h: &Hello) -> Result<(), String> {
        h.check()?;
        if h.mode != self.cfg.mode.wire() {
            return Err(format!(
                "sync mode mismatch: peer node {} runs {}, this engine runs {} (sync.mode)",
                h.node_id,
                Mode::name_of(h.mode),
                Mode::name_of(self.cfg.mode.wire())
            ));
        }
        let ours = self.hello(Role::Standby).heartbeat_us;
        if h.heartbeat_us != ours {
            return Err(format!(
                "heartbeat interval mismatch: peer node {} beats every {} µs, this engine every {} µs (sync.heartbeat_ms)",
                h.node_id, h.heartbeat_us, ours
            ));
        }
        if h.dead_after != self.cfg.dead_after {
            return Err(format!(
                "dead-peer limit mismatch: peer node {} declares its peer dead after {} missed heartbeats, this engine after {} (sync.dead_after)",
                h.node_id, h.dead_after, self.cfg.dead_after
            ));
        }
        // Strict mode: each engine reasons about how long the *other* holds its output with
        // its own value, so both must have the same.
        // - fence_hold: an active that lost its in-sync standby holds output this long; a
        //   dropped standby whose rejoin is refused takes over only within its own fence_hold
        //   of the drop, as the active then released nothing it lacks. A standby with the
        //   longer one would resume flows behind what the active released after its shorter
        //   hold.
        // - handover_hold: the engine that takes over by `Handover` holds all output this long
        //   at most, while the one that handed over keeps its flows to fall back on for its
        //   own handover_hold. A fallback that outlasts the new active's hold resumes flows
        //   behind what it released since; a shorter one (or 0 on one side) holds output for
        //   a fallback that is gone.
        // In async mode the active holds nothing after losing its standby and no handover
        // holds or falls back (both are strict-only), so a difference is harmless there and
        // not refused. Not compared in any mode: `async_max_lag` (only an async active reads
        // it, to bound how far its own output runs ahead of its standby; the standby neither
        // reads it nor assumes its peer's, and after a takeover the new active enforces its
        // own: a difference changes how much a failover of the one engine or the other can
        // lose, not what either assumes of the other), nor the local tuning of `SyncConfig`
        // (`ring_records`, `busy_poll`, `park_max`) and the engine's `sync.link_down_ms`,
        // `cpu`, `scheduler` and `priority`, which no peer reads.
        if self.cfg.mode == Mode::Strict {
            let ours = self.hello(Role::Standby);
            let holds = [
                ("fence hold", "holds its output", "after losing its in-sync standby", "sync.fence_hold_ms", h.fence_hold_us, ours.fence_hold_us),
                (
                    "handover hold",
                    "holds all output at most",
                    "after a handover (and keeps its flows that long after handing over)",
                    "sync.handover_hold_ms",
                    h.handover_hold_us,
                    ours.handover_hold_us,
                ),
            ];
            for (what, verb, when, key, theirs, mine) in holds {
                if theirs != mine {
                    return Err(format!(
                        "{what} mismatch: peer node {} {verb} {} {when}, this engine {} ({key})",
                        h.node_id,
                        ms(theirs),
                        ms(mine)
                    ));
                }
            }
        }
        let groups = self.stack_cfg.group_digest();
        if h.groups != groups {
            // Which VIP moves with which group must be the same on both: a flow replicated
            // for one group would be resumed under another's ownership.
            return Err(format!(
                "ownership group mismatch: peer node {} has group layout {:016x}, this engine {:016x} ({}); `flowtwin check-config` prints a file's layout",
                h.node_id,
                h.groups,
                groups,
                self.stack_cfg.group_layout()
            ));
        }
        // After the layout: two engines with other groups also run other sessions, and the
        // layout names the difference better.
        if h.session != self.cfg.groups.0 {
            return Err(format!(
                "session mismatch: peer node {} offers the session of groups {:#x}, this one replicates groups {:#x}",
                h.node_id, h.session, self.cfg.groups.0
            ));
        }
        Ok(())
    }
}

/// A duration in whole µs as `Hello` carries it (saturated; the config's limits are far below).
fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// `us` µs in milliseconds, the unit of the `sync.*_ms` keys a refusal names.
fn ms(us: u32) -> String {
    match us % 1000 {
        0 => format!("{} ms", us / 1000),
        frac => format!("{}.{frac:03} ms", us / 1000),
    }
}
