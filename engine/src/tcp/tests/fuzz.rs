//! Never panic: arbitrary header sequences against every state.

use super::*;
use proptest::prelude::*;

fn arb_hdr() -> impl Strategy<Value = (TcpHeader, usize)> {
    (
        any::<u8>(),
        prop_oneof![any::<u32>(), (-3000i32..70_000i32).prop_map(|x| x as u32)],
        prop_oneof![any::<u32>(), (-3000i32..70_000i32).prop_map(|x| x as u32)],
        any::<u16>(),
        0usize..3000,
        proptest::option::of((any::<u32>(), any::<u32>())),
        proptest::collection::vec((any::<u32>(), any::<u32>()), 0..5),
    )
        .prop_map(|(flags, dseq, dack, window, len, ts, sacks)| {
            let mut o = TcpOptions { timestamps: ts, ..Default::default() };
            for (i, (l, r)) in sacks.iter().take(4).enumerate() {
                o.sack_blocks[i] = SackBlock { left: SeqNum(l.wrapping_add(CISN.0)), right: SeqNum(r.wrapping_add(SISN.0)) };
            }
            o.sack_count = sacks.len() as u8; // may exceed 4: sacks() must cope
            let h = TcpHeader {
                src_port: 5555,
                dst_port: 80,
                seq: CISN + dseq,
                ack: SISN + dack,
                flags: F(flags),
                window,
                options: o,
            };
            (h, len)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_segments_never_panic(
        segs in proptest::collection::vec(arb_hdr(), 1..60),
        opts in any::<u8>(),
        gen in 0u64..200_000,
        timer_steps in proptest::collection::vec(0u64..3000, 1..60),
    ) {
        let cfg = TcpConfig { max_ooo_bytes: 8192, ..TcpConfig::default() };
        let o = TcpOptions {
            mss: if opts & 1 != 0 { Some((opts as u16) * 7) } else { None },
            wscale: if opts & 2 != 0 { Some(opts >> 2) } else { None },
            sack_permitted: opts & 4 != 0,
            timestamps: if opts & 8 != 0 { Some((opts as u32, 0)) } else { None },
            ..Default::default()
        };
        let mut out = RecSink::default();
        let mut svc = TestSvc::open_generator(gen, 1 << 16);
        let mut tcb = if opts & 16 != 0 {
            Tcb::connect(t(0), &cfg, 40000, 80, SISN, &mut out)
        } else {
            Tcb::accept(t(0), &cfg, &syn(o), SISN, &mut out).unwrap()
        };
        let payload = vec![0xabu8; 3000];
        let mut now = t(0);
        for (i, (h, len)) in segs.iter().enumerate() {
            now = now + Duration::from_millis(timer_steps[i % timer_steps.len()]);
            let _ = tcb.on_segment(now, &cfg, h, &payload[..*len], &mut svc, &mut out);
            if let Some(d) = tcb.next_deadline() {
                if d <= now { tcb.on_timer(now, &cfg, &mut svc, &mut out); }
            }
            if i % 7 == 0 { svc.drain_app(); tcb.poll_send(now, &cfg, &mut svc, &mut out); }
            let _ = tcb.snapshot();
            out.segs.clear();
        }
    }
}
