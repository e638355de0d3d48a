//! Unit tests of the reader's bookkeeping: the delivery record, partition
//! tracks, admission and message reuse. Separate: they read as a whole on
//! their own, and keep the reader's files to the code.

use std::time::SystemTime;

use bytes::Bytes;

use super::assignment::*;
use super::incoming::*;
use super::marks::*;
use super::tracks::*;
use super::*;
use crate::wire;

#[test]
fn marks_count_each_handing_out() {
    let none = Marks::default();
    assert_eq!(none.count_at(5), 0);
    let once = none.with_prefix(7);
    assert_eq!(once.encode(), "pb1:7:1");
    assert_eq!((once.count_at(3), once.count_at(7), once.count_at(8)), (1, 1, 0));
    let parsed = Marks::parse(&once.encode());
    assert_eq!(parsed, once);
    // A second consumer got as far as 4 before it too died.
    let twice = parsed.with_prefix(4);
    assert_eq!(twice.encode(), "pb1:4:2,7:1");
    assert_eq!((twice.count_at(4), twice.count_at(5)), (2, 1));
    // Committing past 4 forgets what no longer matters.
    assert_eq!(twice.from(5).encode(), "pb1:7:1");
    assert_eq!(Marks::parse("something else"), Marks::default());
    assert_eq!(Marks::parse("pb1:x:1"), Marks::default());
}

#[test]
fn marks_stay_small() {
    let mut m = Marks::default();
    for t in (0..100).rev() {
        m = m.with_prefix(t);
    }
    let kept = m.from(0);
    assert!(kept.0.len() <= MAX_MARKS);
    assert_eq!(kept.count_at(0), 100);
    assert!(kept.encode().len() < 400);
}

#[test]
fn commit_point_is_the_lowest_unsettled() {
    let mut t = Track::new(1, Some(10), "");
    assert_eq!(t.wanted(0), None);
    for o in 10..14 {
        t.outstanding.insert(o, false);
        t.handed_through = Some(o);
        t.next = Some(o + 1);
    }
    assert!(t.outstanding.settle(11));
    assert!(t.outstanding.settle(12));
    let commit = |t: &mut Track| t.wanted(0).map(|w| w.commit);
    assert_eq!(commit(&mut t), Some((10, "pb1:13:1".to_string())));
    assert!(t.outstanding.settle(10));
    assert_eq!(commit(&mut t), Some((13, "pb1:13:1".to_string())));
    assert!(t.outstanding.settle(13));
    assert_eq!(commit(&mut t), Some((14, String::new())));
}

#[test]
fn the_record_runs_ahead_of_what_is_handed_out() {
    let mut t = Track::new(1, Some(10), "pb1:11:2");
    // Nothing handed out: nothing to record, nothing to wait for.
    assert_eq!(t.check_record(4), (true, false));
    t.outstanding.insert(10, false);
    t.handed_through = Some(10);
    t.next = Some(11);
    assert_eq!(t.check_record(4), (false, true), "handed out, not recorded");
    let w = t.wanted(4).unwrap();
    // Offsets 10..=14 claimed once more; 10 and 11 had two deliveries before.
    assert_eq!(w, Wanted { commit: (10, "pb1:11:3,14:1".to_string()), claim: Some(14) });
    t.committed = Some(w.commit);
    t.recorded_through = w.claim;
    assert_eq!(t.wanted(4), None, "nothing moved");
    assert_eq!(t.check_record(4), (true, false));
    for o in 11..14 {
        t.outstanding.insert(o, false);
        t.handed_through = Some(o);
    }
    assert_eq!(t.check_record(4), (true, true), "covered, but less than half a receive ahead");
    // Giving the partition up records exactly what was handed out.
    assert_eq!(t.wanted(0).unwrap().commit, (10, "pb1:11:3,13:1".to_string()));
}

/// An empty main-topic message read at `offset` of `topic[partition]`.
fn incoming(topic: &Arc<str>, partition: i32, offset: i64) -> Incoming {
    Incoming {
        kind: Kind::Main,
        topic: Arc::clone(topic),
        partition,
        offset,
        timestamp_ms: None,
        key: None,
        body: Body::Decoded {
            message: Arc::new(wire::decode(Vec::<(String, String)>::new(), Bytes::new(), 1).message),
            malformed: None,
        },
    }
}

/// Disposed deliveries (their receipts hold the reader) are taken by
/// the reading task, which keeps their allocations for the messages it
/// reads next, and dropped at once once it stopped: no cycle outlives it.
#[tokio::test]
async fn disposed_deliveries_are_reused_and_do_not_keep_the_reader() {
    let options = Options::from_url(&crate::url::BrokerUrl::parse("kafka://127.0.0.1:1").unwrap()).unwrap();
    let outbox = Outbox::new(&options).unwrap();
    let reader = Arc::new(Reader::new(&options, "t", "g", "c").unwrap());
    let topic: Arc<str> = Arc::from("t");
    let batch = |from: i64| -> Vec<Delivery> {
        let mut spares = Spares::default();
        (from..from + 3).map(|o| reader.delivery(incoming(&topic, 0, o), 0, 1, &mut spares)).collect()
    };
    reader.dispose(batch(0));
    assert_eq!(Arc::strong_count(&reader), 4, "held for the reading task");
    // The reading task (it holds the reader too) takes them on its next
    // turn and keeps their receipts as spares: still three, not more.
    // (It recycles them before it next waits, and this test's runtime
    // has one thread: once they are taken, they are recycled.)
    reader.start_reading(&outbox);
    let deadline = Instant::now() + Duration::from_secs(5);
    while reader.finished.lock().unwrap().len() == 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(Arc::strong_count(&reader), 5, "the task and three spare receipts");
    reader.dispose(batch(3));
    reader.stop_reading().await;
    assert_eq!(Arc::strong_count(&reader), 1, "spares and whatever waited are dropped when the task stops");
    reader.dispose(batch(6));
    assert_eq!(Arc::strong_count(&reader), 1, "dropped at once after it stopped");
}

/// Only what nothing else holds is reused (a handler may keep its
/// message), and a reused message decodes as a new one would.
#[tokio::test]
async fn spares_are_what_only_finished_deliveries_held() {
    let options = Options::from_url(&crate::url::BrokerUrl::parse("kafka://127.0.0.1:1").unwrap()).unwrap();
    let reader = Arc::new(Reader::new(&options, "t", "g", "c").unwrap());
    let topic: Arc<str> = Arc::from("t");
    let mut spares = Spares::default();
    let mut finished: Vec<Delivery> =
        (0..2).map(|o| reader.delivery(incoming(&topic, 0, o), 0, 1, &mut spares)).collect();
    let kept = Arc::clone(&finished[0].message);
    let reusable = Arc::as_ptr(&finished[1].message);
    spares.recycle(&mut finished);
    assert!(finished.is_empty());
    assert_eq!((spares.messages.len(), spares.receipts.len()), (1, 2));
    let fields = || [(wire::ID, std::borrow::Cow::Borrowed("0190b0e2-8a4c-7cc0-9a5e-5c2f3f6a0b1c"))];
    let (message, malformed) = spares.decode(fields(), Bytes::from_static(b"next"));
    assert!(malformed.is_none());
    assert_eq!(Arc::as_ptr(&message), reusable, "the spare message is reused");
    assert_eq!(*message, wire::decode(fields(), Bytes::from_static(b"next"), 1).message);
    assert_eq!(Arc::strong_count(&kept), 1, "the message a handler kept is its own");
    let receipt = spares.receipt(KafkaReceipt {
        reader: Arc::clone(&reader),
        topic: Arc::clone(&topic),
        partition: 2,
        offset: 7,
        epoch: 3,
    });
    let r = receipt.get::<KafkaReceipt>().unwrap();
    assert_eq!((r.partition, r.offset, r.epoch, spares.receipts.len()), (2, 7, 3, 1));
}

#[test]
fn only_assigned_partitions_are_admitted() {
    let topic: Arc<str> = Arc::from("t");
    let message = |partition: i32, offset: i64| incoming(&topic, partition, offset);
    let mut st = ReaderState::default();
    st.parts.insert((Arc::clone(&topic), 0), Track::new(7, Some(5), ""));
    assert!(matches!(st.admit(&message(0, 5)), Admission::HandOut { earlier: 0, epoch: 7 }));
    assert!(matches!(st.admit(&message(0, 5)), Admission::Stale), "handed out already");
    // Read before partition 1 was given up: someone else's now, and a
    // commit for it would move their offset.
    assert!(matches!(st.admit(&message(1, 0)), Admission::Stale));
    assert!(!st.parts.contains_key(&(Arc::clone(&topic), 1)));
}

#[test]
fn a_read_is_decided_run_by_run_in_order() {
    let (main, other): (Arc<str>, Arc<str>) = (Arc::from("t"), Arc::from("u"));
    let mut st = ReaderState::default();
    st.parts.insert((Arc::clone(&main), 0), Track::new(1, Some(0), ""));
    st.parts.insert((Arc::clone(&main), 1), Track::new(2, Some(0), ""));
    st.parts.insert((Arc::clone(&other), 0), Track::new(3, Some(0), ""));
    st.paused.insert((Arc::clone(&main), 1), SystemTime::now());
    let read = [
        incoming(&main, 0, 0),
        incoming(&main, 0, 1),
        incoming(&main, 1, 0), // paused: comes again
        incoming(&other, 0, 0),
        incoming(&main, 0, 2),
        incoming(&main, 0, 1), // handed out already
        incoming(&main, 2, 0), // not assigned here
    ];
    let mut decided = Vec::new();
    st.admit_all(&read, &mut decided);
    let got: Vec<Option<u64>> = decided
        .iter()
        .map(|a| match a {
            Admission::HandOut { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![Some(1), Some(1), None, Some(3), Some(1), None, None]);
    assert_eq!(st.parts[&(Arc::clone(&main), 0)].handed_through, Some(2));
    assert_eq!(st.parts[&(Arc::clone(&main), 1)].handed_through, None);
}

#[test]
fn withdrawn_offsets_are_neither_recorded_nor_committed() {
    let mut t = Track::new(1, Some(10), "");
    for o in 10..15 {
        t.outstanding.insert(o, false);
    }
    t.handed_through = Some(14);
    t.next = Some(15);
    // 10..=12 reached a handler, 13 and 14 waited for a receive.
    assert!(t.outstanding.settle(10));
    assert!(t.outstanding.settle(11));
    t.withdraw(13);
    t.withdraw(14);
    t.withdraw(11); // settled already: stays as it is
    assert_eq!(t.wanted(0).unwrap().commit, (12, "pb1:12:1".to_string()));
    assert!(t.outstanding.settle(12));
    // Everything handed out settled: the commit stops at the first withdrawn.
    assert_eq!(t.wanted(0).unwrap().commit, (13, String::new()));
}

#[test]
fn a_partition_that_outruns_its_record_earns_a_longer_lead() {
    let mut t = Track::new(1, Some(0), "");
    let hand_out = |t: &mut Track, through: i64| {
        for o in t.next.unwrap()..=through {
            t.outstanding.insert(o, false);
        }
        t.handed_through = Some(through);
        t.next = Some(through + 1);
    };
    let record = |t: &mut Track, ahead: i64| {
        let w = t.wanted(ahead).unwrap();
        t.committed = Some(w.commit);
        t.recorded_through = w.claim;
    };
    hand_out(&mut t, 9);
    assert_eq!(t.check_record(10), (false, true), "the first hand-out is never covered");
    record(&mut t, 10);
    assert_eq!(t.recorded_through, Some(19), "the usual lead");
    hand_out(&mut t, 14);
    assert_eq!(t.check_record(10), (true, false));
    hand_out(&mut t, 15);
    assert_eq!(t.check_record(10), (true, true), "less than half the lead left");
    hand_out(&mut t, 29);
    assert_eq!(t.check_record(10), (false, true), "outran the record");
    record(&mut t, 10);
    assert_eq!(t.recorded_through, Some(49), "twice the lead");
    for through in [79, 150, 300, 500, 1000] {
        hand_out(&mut t, through);
        assert!(!t.check_record(10).0);
        record(&mut t, 10);
    }
    assert_eq!(t.recorded_through, Some(1320), "at most {MAX_LEAD_GROWTH} times the usual lead");
    // Giving the partition up still records exactly what was handed out.
    assert_eq!(t.wanted(0).unwrap().claim, Some(1000));
}
