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
            heartbeat_us: self.cfg.heartbeat.as_micros().min(u32::MAX as u128) as u32,
            dead_after: self.cfg.dead_after,
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
    /// 2 ms would declare an active beating every 5 ms dead), same ownership groups. The
    /// error names both values.
    pub fn check_peer(&self, h: &Hello) -> Result<(), String> {
        h.check()?;
        if h.mode != self.cfg.mode.wire() {
            return Err(format!(
                "sync mode mismatch: peer node {} runs {}, this engine runs {}",
                h.node_id,
                Mode::name_of(h.mode),
                Mode::name_of(self.cfg.mode.wire())
            ));
        }
        let ours = self.hello(Role::Standby).heartbeat_us;
        if h.heartbeat_us != ours {
            return Err(format!(
                "heartbeat interval mismatch: peer node {} beats every {} µs, this engine every {} µs",
                h.node_id, h.heartbeat_us, ours
            ));
        }
        if h.dead_after != self.cfg.dead_after {
            return Err(format!(
                "dead-peer limit mismatch: peer node {} declares its peer dead after {} missed heartbeats, this engine after {} (sync.dead_after)",
                h.node_id, h.dead_after, self.cfg.dead_after
            ));
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
