//! Delta record layout: golden bytes, error cases, and property tests (round trip,
//! arbitrary words never panic).
#![cfg(not(loom))]
#![forbid(unsafe_code)]

use flowtwin_sync::delta::*;
use flowtwin_sync::ring::{channel, Record, RECORD_WORDS};
use proptest::prelude::*;

fn hdr() -> DeltaHeader {
    DeltaHeader {
        // Bytes 4 and 5: the worker, then the group.
        worker: 0x02,
        group: 0x03,
        slot: 0x0706_0504,
        generation: 0x0b0a_0908,
        seq: 0x1312_1110_0f0e_0d0c,
    }
}

fn sample_state() -> FlowStateRec {
    let mut cursor = [0u8; SERVICE_CURSOR_LEN];
    for (i, b) in cursor.iter_mut().enumerate() {
        *b = i as u8 ^ 0xa5;
    }
    FlowStateRec {
        state: 4,
        iss: 0x1111_1111,
        irs: 0x2222_2222,
        snd_una: 0x1111_1112,
        snd_nxt: 0x1111_2000,
        rcv_nxt: 0x2222_2300,
        snd_wnd: 65535,
        rcv_wnd: 29200,
        snd_wl1: 0x2222_2223,
        snd_wl2: 0x1111_1112,
        rcv_wup: 0x2222_2300,
        max_window: 65535,
        snd_wscale: 7,
        rcv_wscale: 9,
        mss: 1460,
        sack_ok: true,
        ts_ok: true,
        wscale_ok: true,
        ts_offset: 0xdead_beef,
        ts_recent: 0x0102_0304,
        key: FlowKeyRec {
            remote_ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1],
            remote_port: 40000,
            local_ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 7],
            local_port: 80,
        },
        peer_mac: [0x02, 0, 0, 0, 0, 1],
        service_id: 3,
        service_cursor: cursor,
    }
}

/// The bytes of a delta, word by word little-endian: what goes on the replication link.
fn bytes_of(recs: &[Record]) -> Vec<u8> {
    recs.iter()
        .flat_map(|r| r.iter().flat_map(|w| w.to_le_bytes()))
        .collect()
}

#[test]
fn header_golden_bytes() {
    let d = Delta {
        header: hdr(),
        body: DeltaBody::Barrier {
            token: 0x2120_1f1e_1d1c_1b1a,
        },
    };
    let mut out = [[0xffff_ffff_ffff_ffff; RECORD_WORDS]; 2];
    assert_eq!(encode_into(&d, &mut out), Ok(1));
    let b = bytes_of(&out[..1]);
    #[rustfmt::skip]
    let want: [u8; 32] = [
        DELTA_VERSION, DeltaKind::Barrier as u8, 1, 0, 0x02, 0x03, 0, 0,
        0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
        0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13,
        0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21,
    ];
    assert_eq!(&b[..32], &want);
    assert!(b[32..].iter().all(|&x| x == 0), "reserved bytes are zero");
    assert_eq!(
        out[1], [0xffff_ffff_ffff_ffff; RECORD_WORDS],
        "wrote past the delta"
    );
}

#[test]
fn flow_step_golden_offsets() {
    let t = FlowStepRec {
        state: 4,
        snd_una: 0x0101_0101,
        snd_nxt: 0x0202_0202,
        rcv_nxt: 0x0303_0303,
        snd_wnd: 0x0404_0404,
        rcv_wnd: 0x0505_0505,
        ts_recent: 0x0606_0606,
        ts_last_sent: 0x0707_0707,
        tx_acked_lo: 0x0808_0808,
        tx_sent_lo: 0x0909_0909,
        rx_delivered_lo: 0x0a0a_0a0a,
    };
    let d = Delta { header: hdr(), body: DeltaBody::FlowStep(t) };
    let mut v = Vec::new();
    assert_eq!(encode(&d, &mut v), Ok(1), "one record instead of three");
    let b = bytes_of(&v);
    assert_eq!(b.len(), 64);
    assert_eq!(&b[..4], &[DELTA_VERSION, DeltaKind::FlowStep as u8, 1, 4], "the state in header byte 3");
    for (i, chunk) in b[24..64].chunks(4).enumerate() {
        assert_eq!(chunk, &[(i + 1) as u8; 4], "field {i} at byte {}", 24 + 4 * i);
    }
    assert_eq!(decode(&v), Ok((d, 1)));
}

#[test]
fn flow_state_golden_offsets() {
    let s = sample_state();
    let d = Delta {
        header: hdr(),
        body: DeltaBody::FlowNew(s),
    };
    let mut v = Vec::new();
    assert_eq!(encode(&d, &mut v), Ok(FLOW_STATE_RECORDS));
    let b = bytes_of(&v);
    assert_eq!(b.len(), 192);
    assert_eq!(b[2], FLOW_STATE_RECORDS as u8);
    assert_eq!(b[24], 4); // state
    assert_eq!(b[25], 0b111); // sack | ts | wscale
    assert_eq!((b[26], b[27]), (7, 9));
    assert_eq!(&b[28..30], &1460u16.to_le_bytes());
    assert_eq!(&b[30..32], &3u16.to_le_bytes());
    assert_eq!(&b[32..36], &0x1111_1111u32.to_le_bytes()); // iss
    assert_eq!(&b[44..48], &0x1111_2000u32.to_le_bytes()); // snd_nxt
    assert_eq!(&b[76..80], &0xdead_beefu32.to_le_bytes()); // ts_offset
    assert_eq!(&b[84..100], &s.key.remote_ip);
    assert_eq!(&b[100..102], &40000u16.to_le_bytes());
    assert_eq!(&b[102..118], &s.key.local_ip);
    assert_eq!(&b[118..120], &80u16.to_le_bytes());
    assert_eq!(&b[120..126], &s.peer_mac);
    assert_eq!(&b[126..128], &[0, 0]);
    assert_eq!(&b[128..192], &s.service_cursor);
    assert_eq!(decode(&v), Ok((d, FLOW_STATE_RECORDS)));
}

#[test]
fn data_layout_and_sizes() {
    assert_eq!(MAX_DATA_PAYLOAD, 1504);
    assert_eq!(data_records(0), 1);
    assert_eq!(data_records(32), 1);
    assert_eq!(data_records(33), 2);
    assert_eq!(data_records(MAX_DATA_PAYLOAD), MAX_DATA_RECORDS);
    let payload: Vec<u8> = (0..100u8).collect();
    let mut out = [[u64::MAX; RECORD_WORDS]; MAX_DELTA_RECORDS];
    let n = encode_data_into(&hdr(), 0x0102_0304_0506_0708, &payload, &mut out).unwrap();
    assert_eq!(n, 3);
    let b = bytes_of(&out[..n]);
    assert_eq!(&b[6..8], &100u16.to_le_bytes());
    assert_eq!(&b[24..32], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&b[32..132], &payload[..]);
    assert!(
        b[132..].iter().all(|&x| x == 0),
        "padding is zero, not stale"
    );
    let (d, used) = decode(&out).unwrap();
    assert_eq!(used, 3);
    match d.body {
        DeltaBody::Data(ref c) => {
            assert_eq!(c.offset, 0x0102_0304_0506_0708);
            assert_eq!(c.payload(), &payload[..]);
        }
        ref other => panic!("decoded {other:?}"),
    }
    let mut buf = [0u8; 100];
    assert_eq!(
        decode_data_into(&out, &mut buf),
        Ok((0x0102_0304_0506_0708, 100))
    );
    assert_eq!(&buf[..], &payload[..]);
    let mut small = [0u8; 99];
    assert_eq!(
        decode_data_into(&out, &mut small),
        Err(DeltaError::OutputTooSmall {
            need: 100,
            have: 99
        })
    );
}

#[test]
fn oversized_payload_rejected() {
    let big = vec![0u8; MAX_DATA_PAYLOAD + 1];
    let mut out = [[0; RECORD_WORDS]; MAX_DELTA_RECORDS + 1];
    assert_eq!(
        encode_data_into(&hdr(), 0, &big, &mut out),
        Err(DeltaError::PayloadTooLarge {
            len: MAX_DATA_PAYLOAD + 1
        })
    );
    assert!(DataRec::new(0, &big).is_err());
    assert!(DataRec::new(0, &big[1..]).is_ok());
}

#[test]
fn encode_into_short_buffer() {
    let d = Delta {
        header: hdr(),
        body: DeltaBody::FlowUpdate(sample_state()),
    };
    let mut out = [[0; RECORD_WORDS]; 2];
    assert_eq!(
        encode_into(&d, &mut out),
        Err(DeltaError::OutputTooSmall { need: 3, have: 2 })
    );
    let mut v = vec![[7; RECORD_WORDS]];
    assert_eq!(encode(&d, &mut v), Ok(3));
    assert_eq!(v.len(), 4);
    assert_eq!(v[0], [7; RECORD_WORDS], "encode appends");
}

#[test]
fn unknown_version_is_a_clear_error() {
    let d = Delta {
        header: hdr(),
        body: DeltaBody::FlowClose(CloseRec {
            reason: close_reason::RST,
        }),
    };
    let mut out = [[0; RECORD_WORDS]; 1];
    encode_into(&d, &mut out).unwrap();
    // Version lives in the low byte of word 0.
    out[0][0] = (out[0][0] & !0xff) | 1;
    let e = decode(&out).unwrap_err();
    assert_eq!(
        e,
        DeltaError::Version {
            got: 1,
            expected: DELTA_VERSION
        }
    );
    assert!(e.to_string().contains("version 1"), "{e}");
    // Version is checked before kind: garbage everywhere else still says "version".
    out[0][0] = 0xffff_ffff_ffff_ff07;
    assert!(matches!(
        decode(&out),
        Err(DeltaError::Version { got: 7, .. })
    ));
}

#[test]
fn bad_kind_count_and_truncation() {
    let mut out = [[0; RECORD_WORDS]; 3];
    assert_eq!(
        decode(&out),
        Err(DeltaError::Version {
            got: 0,
            expected: DELTA_VERSION
        })
    );
    assert_eq!(decode(&[]), Err(DeltaError::Truncated { need: 1, have: 0 }));
    let v = u64::from(DELTA_VERSION);
    out[0][0] = v; // current version, kind 0
    assert_eq!(decode(&out), Err(DeltaError::Kind(0)));
    out[0][0] = v | (9 << 8);
    assert_eq!(decode(&out), Err(DeltaError::Kind(9)));
    // A FlowNew claiming 2 records.
    out[0][0] = v | (1 << 8) | (2 << 16);
    assert_eq!(
        decode(&out),
        Err(DeltaError::RecordCount {
            kind: DeltaKind::FlowNew,
            got: 2,
            expected: 3
        })
    );
    // A well-formed FlowNew with only 2 of its 3 records present.
    let d = Delta {
        header: hdr(),
        body: DeltaBody::FlowNew(sample_state()),
    };
    encode_into(&d, &mut out).unwrap();
    assert_eq!(
        decode(&out[..2]),
        Err(DeltaError::Truncated { need: 3, have: 2 })
    );
    // Unknown flag bits.
    let mut bad = out;
    bad[0][3] |= 0x80 << 8; // byte 25 = flags
    assert_eq!(decode(&bad), Err(DeltaError::Field("flow flags")));
    // A Close with a body length.
    let mut one = [[0; RECORD_WORDS]; 1];
    one[0][0] = v | (4 << 8) | (1 << 16) | (5 << 48);
    assert_eq!(decode(&one), Err(DeltaError::Field("body_len")));
    // A Data header claiming more than the maximum payload.
    one[0][0] = v | (3 << 8) | (25 << 16) | (0xffff << 48);
    assert_eq!(
        decode(&one),
        Err(DeltaError::PayloadTooLarge { len: 0xffff })
    );
}

#[test]
fn stream_of_deltas_through_a_ring() {
    // Several deltas of different sizes pushed whole with try_push_many, popped in
    // small bursts, reassembled with peek/advance and decoded in order.
    let (mut p, mut c) = channel(16);
    let payload: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
    let deltas: Vec<Delta> = (0..40u64)
        .map(|i| Delta {
            header: DeltaHeader { seq: i, ..hdr() },
            body: match i % 4 {
                0 => DeltaBody::FlowNew(sample_state()),
                1 => {
                    DeltaBody::Data(DataRec::new(i * 1000, &payload[..(i as usize * 17)]).unwrap())
                }
                2 => DeltaBody::FlowClose(CloseRec { reason: 1 }),
                _ => DeltaBody::Barrier { token: i },
            },
        })
        .collect();
    let mut buf = [[0; RECORD_WORDS]; MAX_DELTA_RECORDS];
    let mut got = Vec::new();
    let mut scratch = [[0; RECORD_WORDS]; 16];
    let mut next = 0;
    while got.len() < deltas.len() {
        if next < deltas.len() {
            let n = encode_into(&deltas[next], &mut buf).unwrap();
            if p.try_push_many(&buf[..n]).is_ok() {
                next += 1;
            }
        }
        let n = c.peek_burst(&mut scratch);
        let mut used = 0;
        while used < n {
            match decode(&scratch[used..n]) {
                Ok((d, k)) => {
                    got.push(d);
                    used += k;
                }
                Err(DeltaError::Truncated { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        c.advance(used);
    }
    assert_eq!(got, deltas);
}

fn arb_state() -> impl Strategy<Value = FlowStateRec> {
    (
        (
            any::<u8>(),
            any::<[u32; 11]>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
        ),
        (any::<[bool; 3]>(), any::<u32>(), any::<u32>()),
        (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>(),
        ),
        (
            any::<[u8; 6]>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), SERVICE_CURSOR_LEN),
        ),
    )
        .prop_map(
            |(
                (state, v, snd_wscale, rcv_wscale, mss),
                (f, ts_offset, ts_recent),
                k,
                (mac, sid, cur),
            )| {
                FlowStateRec {
                    state,
                    iss: v[0],
                    irs: v[1],
                    snd_una: v[2],
                    snd_nxt: v[3],
                    rcv_nxt: v[4],
                    snd_wnd: v[5],
                    rcv_wnd: v[6],
                    snd_wl1: v[7],
                    snd_wl2: v[8],
                    rcv_wup: v[9],
                    max_window: v[10],
                    snd_wscale,
                    rcv_wscale,
                    mss,
                    sack_ok: f[0],
                    ts_ok: f[1],
                    wscale_ok: f[2],
                    ts_offset,
                    ts_recent,
                    key: FlowKeyRec {
                        remote_ip: k.0,
                        remote_port: k.1,
                        local_ip: k.2,
                        local_port: k.3,
                    },
                    peer_mac: mac,
                    service_id: sid,
                    service_cursor: cur.try_into().unwrap(),
                }
            },
        )
}

fn arb_delta() -> impl Strategy<Value = Delta> {
    let header = (any::<u8>(), any::<u8>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(worker, group, slot, generation, seq)| DeltaHeader {
            worker: u16::from(worker),
            group,
            slot,
            generation,
            seq,
        },
    );
    let body = prop_oneof![
        arb_state().prop_map(DeltaBody::FlowNew),
        arb_state().prop_map(DeltaBody::FlowUpdate),
        (
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..=MAX_DATA_PAYLOAD)
        )
            .prop_map(|(off, p)| DeltaBody::Data(DataRec::new(off, &p).unwrap())),
        any::<u8>().prop_map(|reason| DeltaBody::FlowClose(CloseRec { reason })),
        any::<u64>().prop_map(|token| DeltaBody::Barrier { token }),
        (any::<u8>(), prop::array::uniform10(any::<u32>())).prop_map(|(state, v)| DeltaBody::FlowStep(FlowStepRec {
            state,
            snd_una: v[0],
            snd_nxt: v[1],
            rcv_nxt: v[2],
            snd_wnd: v[3],
            rcv_wnd: v[4],
            ts_recent: v[5],
            ts_last_sent: v[6],
            tx_acked_lo: v[7],
            tx_sent_lo: v[8],
            rx_delivered_lo: v[9],
        })),
        (
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..=MAX_DATA_PAYLOAD)
        )
            .prop_map(|(off, p)| DeltaBody::SvcImage(DataRec::new(off, &p).unwrap())),
    ];
    (header, body).prop_map(|(header, body)| Delta { header, body })
}

proptest! {
    #[test]
    fn prop_round_trip(d in arb_delta(), junk in any::<u64>()) {
        // Start from junk so every byte the encoder leaves undefined would show.
        let mut out = [[junk; RECORD_WORDS]; MAX_DELTA_RECORDS];
        let n = encode_into(&d, &mut out).unwrap();
        prop_assert_eq!(n, d.records());
        let mut v = Vec::new();
        prop_assert_eq!(encode(&d, &mut v), Ok(n));
        prop_assert_eq!(&v[..], &out[..n], "encode and encode_into agree; no junk leaks");
        let peeked = peek_header(&out).unwrap();
        prop_assert_eq!(peeked.kind, d.body.kind());
        prop_assert_eq!(peeked.records, n);
        prop_assert_eq!(peeked.header, d.header);
        prop_assert_eq!(decode(&out[..n]), Ok((d, n)));
        // One record short is always reported as truncation.
        let short = decode(&out[..n - 1]).unwrap_err();
        prop_assert_eq!(short, DeltaError::Truncated { need: n, have: n - 1 });
    }

    #[test]
    fn prop_arbitrary_words_never_panic(words in prop::collection::vec(any::<u64>(), 0..(RECORD_WORDS * (MAX_DELTA_RECORDS + 2)))) {
        let recs: Vec<Record> = words
            .chunks_exact(RECORD_WORDS)
            .map(|c| c.try_into().unwrap())
            .collect();
        if let Ok((d, used)) = decode(&recs) {
            prop_assert!(used >= 1 && used <= recs.len());
            // Whatever decodes re-encodes to the same header and size.
            let mut out = [[0; RECORD_WORDS]; MAX_DELTA_RECORDS];
            prop_assert_eq!(encode_into(&d, &mut out), Ok(used));
            prop_assert_eq!(decode(&out[..used]), Ok((d, used)));
        }
        let _ = peek_header(&recs);
        let mut buf = [0u8; MAX_DATA_PAYLOAD];
        let _ = decode_data_into(&recs, &mut buf);
        let mut tiny = [0u8; 3];
        let _ = decode_data_into(&recs, &mut tiny);
    }

    /// Random words behind a valid version/kind/count header, so the decoder's body
    /// paths see garbage too (plain random words almost never pass the version check).
    #[test]
    fn prop_garbage_bodies_never_panic(
        kind in 0u8..8,
        nrec in 0u8..30,
        body_len in any::<u16>(),
        words in prop::collection::vec(any::<u64>(), RECORD_WORDS * MAX_DELTA_RECORDS),
        take in 0usize..=MAX_DELTA_RECORDS,
    ) {
        let mut recs: Vec<Record> = words
            .chunks_exact(RECORD_WORDS)
            .map(|c| c.try_into().unwrap())
            .collect();
        let body_len = if body_len % 2 == 0 { body_len % 1600 } else { body_len };
        recs[0][0] = u64::from(DELTA_VERSION)
            | u64::from(kind) << 8
            | u64::from(nrec) << 16
            | (recs[0][0] & 0x0000_ffff_ff00_0000)
            | u64::from(body_len) << 48;
        let recs = &recs[..take];
        if let Ok((d, used)) = decode(recs) {
            prop_assert_eq!(used, d.records());
            prop_assert_eq!(d.body.kind() as u8, kind);
        }
        let mut buf = [0u8; MAX_DATA_PAYLOAD];
        let _ = decode_data_into(recs, &mut buf);
    }
}

mod step {
    use flowtwin_engine::flow::FlowKey;
    use flowtwin_engine::replica::FlowImage;
    use flowtwin_engine::seq::SeqNum;
    use flowtwin_engine::tcp::{State, TcbSnapshot};
    use flowtwin_engine::wire::MacAddr;
    use flowtwin_sync::delta::{DeltaError, FlowStepRec};
    use std::net::Ipv4Addr;

    fn image(tx_acked: u64, tx_sent: u64, rx: u64) -> FlowImage {
        FlowImage {
            key: FlowKey::v4(Ipv4Addr::new(198, 18, 1, 7), 40000, Ipv4Addr::new(198, 18, 0, 100), 80),
            tcb: TcbSnapshot {
                state: State::Established,
                local_port: 80,
                remote_port: 40000,
                iss: SeqNum(7),
                irs: SeqNum(9),
                snd_wscale: 7,
                mss: 1460,
                ts_ok: true,
                ts_offset: 0x1234,
                tx_acked,
                tx_sent,
                rx_delivered: rx,
                ..Default::default()
            },
            peer_mac: MacAddr([2, 0, 0, 0, 0, 7]),
            vip_mac: MacAddr([0, 0, 0x5e, 0, 1, 1]),
            listener: 1,
                listener_fp: 0,
            origin: Default::default(),
            link: None,
        }
    }

    #[test]
    fn a_step_moves_a_replica_to_the_actives_image() {
        let base = image(100, 200, 300);
        let mut next = image(5000, 9000, 400);
        next.tcb.state = State::FinWait1;
        next.tcb.snd_una = SeqNum(5107);
        next.tcb.snd_nxt = SeqNum(9108);
        next.tcb.rcv_nxt = SeqNum(410);
        next.tcb.snd_wnd = 65535 << 7;
        next.tcb.rcv_wnd = 1 << 20;
        next.tcb.ts_recent = 77;
        next.tcb.ts_last_sent = 88;
        assert_eq!(FlowStepRec::from_image(&next).apply_to(&base), Ok(next));
    }

    #[test]
    fn stream_offsets_extend_across_the_32_bit_wrap() {
        let base = image(0x1_ffff_fff0, 0x2_ffff_ff00, 0xffff_ffff);
        let next = image(0x2_0000_0010, 0x3_0000_2000, 0x1_0000_0005);
        assert_eq!(FlowStepRec::from_image(&next).apply_to(&base), Ok(next));
    }

    #[test]
    fn an_offset_that_would_move_back_or_jump_2_gib_is_refused() {
        let base = image(1 << 40, 1 << 40, 1 << 40);
        let back = image((1 << 40) - 1, 1 << 40, 1 << 40);
        assert_eq!(FlowStepRec::from_image(&back).apply_to(&base), Err(DeltaError::Field("tx_acked")));
        let jump = image(1 << 40, (1 << 40) + (1 << 31), 1 << 40);
        assert_eq!(FlowStepRec::from_image(&jump).apply_to(&base), Err(DeltaError::Field("tx_sent")));
        let fine = image(1 << 40, (1 << 40) + (1 << 31) - 1, 1 << 40);
        assert!(FlowStepRec::from_image(&fine).apply_to(&base).is_ok());
    }

    #[test]
    fn a_state_byte_that_is_no_state_is_refused() {
        let base = image(1, 1, 1);
        let mut t = FlowStepRec::from_image(&base);
        t.state = 200;
        assert_eq!(t.apply_to(&base), Err(DeltaError::Field("state")));
    }
}

/// A worker's replicator writes the flow's ownership group into each delta's header (byte
/// 5), by which the sync core routes the delta to the session of that group.
#[test]
fn a_worker_names_each_deltas_group() {
    use flowtwin_engine::group::GroupId;
    use flowtwin_engine::replica::{ReplEvent, Replicator};
    let (mut repl, mut link) = flowtwin_sync::replicator::worker_channel(7, 64);
    repl.emit_in(GroupId(3), (5, 1), ReplEvent::Close).unwrap();
    repl.emit((6, 1), ReplEvent::Close).unwrap();
    repl.emit_in(GroupId(63), (7, 1), ReplEvent::Data { offset: 0, bytes: b"abc" }).unwrap();
    let mut recs = vec![[0u64; RECORD_WORDS]; 16];
    let n = link.consumer.peek_burst(&mut recs);
    let mut at = 0;
    let mut seen = Vec::new();
    while at < n {
        let p = peek_header(&recs[at..n]).unwrap();
        seen.push((p.header.worker, p.header.group, p.header.slot, p.header.seq));
        at += p.records;
    }
    assert_eq!(seen, [(7, 3, 5, 1), (7, 0, 6, 2), (7, 63, 7, 3)]);
}
