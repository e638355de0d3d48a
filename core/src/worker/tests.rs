use std::sync::atomic::AtomicUsize;
use std::time::SystemTime;

use super::*;
use crate::message::Message;

mod faulty;
use faulty::FaultyBroker;

/// Runs `worker` in the background.
fn start(worker: &Worker) -> tokio::task::JoinHandle<Result<()>> {
    let runner = worker.clone();
    tokio::spawn(async move { runner.run().await })
}

/// Waits until `worker`'s stats satisfy `done` or 20 s pass (the caller
/// asserts what it expects).
async fn until(worker: &Worker, done: impl Fn(&WorkerStats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&worker.stats()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `worker` has handled `n` messages or 20 s pass.
async fn until_succeeded(worker: &Worker, n: u64) {
    until(worker, |s| s.succeeded >= n).await;
}

/// A handler that succeeds at once.
async fn no_op(_job: Job) -> std::result::Result<(), HandlerError> {
    Ok(())
}

/// Runs `count` messages through a worker of `concurrency` whose handler
/// is `work`; returns how many handlers ran at once at most.
async fn peak_running<F, Fut>(concurrency: usize, count: usize, work: F) -> usize
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let broker = crate::connect("memory://").await.unwrap();
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", (0..count).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p, work) = (Arc::clone(&running), Arc::clone(&peak), Arc::new(work));
    let handler = move |_job: Job| {
        let (r, p, work) = (Arc::clone(&r), Arc::clone(&p), Arc::clone(&work));
        async move {
            p.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            work().await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    };
    // Room for every message at once: one receive takes them all, and
    // the fetcher wakes one loop for them (the loops spread them).
    let options =
        WorkerOptions::default().concurrency(concurrency).prefetch(count).poll_wait(Duration::from_millis(50));
    let worker = Worker::new(broker, "t", "g", handler, options).unwrap();
    let task = start(&worker);
    until_succeeded(&worker, count as u64).await;
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(worker.stats().succeeded, count as u64);
    peak.load(Ordering::SeqCst)
}

/// By default a worker reads ahead while its handlers are quick: a backlog
/// comes in batches, not a receive per message.
#[tokio::test]
async fn quick_handlers_read_ahead_by_default() {
    let memory = crate::connect("memory://").await.unwrap();
    memory.ensure_group("t", "g").await.unwrap();
    memory.publish("t", (0..1000).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    let broker = Arc::new(FaultyBroker::new(memory, 0, 0));
    let options = WorkerOptions::default().poll_wait(Duration::from_millis(50));
    let worker = Worker::new(Arc::clone(&broker) as Arc<dyn Broker>, "t", "g", no_op, options).unwrap();
    let task = start(&worker);
    until_succeeded(&worker, 1000).await;
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(worker.stats().succeeded, 1000);
    let largest = broker.largest_receive.load(Ordering::SeqCst);
    assert!(largest > READ_AHEAD_COUNT / 2, "the largest receive got {largest}");
}

/// Where the broker pushes ahead, handlers that wait on another runtime
/// (JavaScript, Python) free their slots a few at a time; the worker still
/// receives in batches while they have a backlog, not a few messages a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_broker_that_pushes_ahead_is_received_from_in_batches() {
    const COUNT: usize = 2000;
    let memory = crate::connect("memory://").await.unwrap();
    memory.ensure_group("t", "g").await.unwrap();
    memory.publish("t", (0..COUNT).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    let broker = Arc::new(FaultyBroker { pushes_ahead: true, ..FaultyBroker::new(memory, 0, 0) });
    // Each handler waits for another thread, which takes the jobs waiting
    // a moment after the first arrives and finishes them together, as an
    // event loop woken for them does.
    let (to_other, jobs) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
    let other = std::thread::spawn(move || {
        while let Ok(first) = jobs.recv() {
            std::thread::sleep(Duration::from_micros(20));
            for done in std::iter::once(first).chain(jobs.try_iter()) {
                let _ = done.send(());
            }
        }
    });
    let handler = move |_job: Job| {
        let (done, finished) = tokio::sync::oneshot::channel();
        to_other.send(done).unwrap();
        async move {
            finished.await.unwrap();
            Ok::<(), HandlerError>(())
        }
    };
    let options = WorkerOptions::default().concurrency(4).prefetch(196).poll_wait(Duration::from_millis(50));
    let worker = Worker::new(Arc::clone(&broker) as Arc<dyn Broker>, "t", "g", handler, options).unwrap();
    let task = start(&worker);
    until_succeeded(&worker, COUNT as u64).await;
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(worker.stats().succeeded, COUNT as u64);
    drop(worker);
    other.join().unwrap();
    let receives = broker.receives.load(Ordering::SeqCst);
    assert!(receives <= COUNT / 20, "{receives} receives for {COUNT} messages");
}

/// By default, slow handlers hold nothing extra: with two workers, no
/// message waits on a busy one while the other could run it.
#[tokio::test]
async fn slow_handlers_hold_nothing_extra_by_default() {
    const SLOW: Duration = Duration::from_millis(300);
    let memory = crate::connect("memory://").await.unwrap();
    memory.ensure_group("t", "g").await.unwrap();
    let brokers: Vec<Arc<FaultyBroker>> =
        (0..2).map(|_| Arc::new(FaultyBroker::new(Arc::clone(&memory), 0, 0))).collect();
    // How long each message waited on its worker before its handler began.
    let waits: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let workers: Vec<Worker> = brokers
        .iter()
        .map(|broker| {
            let (seen, waits) = (Arc::clone(broker), Arc::clone(&waits));
            let handler = move |job: Job| {
                let received = seen.received_at.lock().unwrap()[&job.message.id];
                waits.lock().unwrap().push(received.elapsed());
                async move {
                    tokio::time::sleep(SLOW).await;
                    Ok::<(), HandlerError>(())
                }
            };
            let options = WorkerOptions::default().poll_wait(Duration::from_millis(50));
            Worker::new(Arc::clone(broker) as Arc<dyn Broker>, "t", "g", handler, options).unwrap()
        })
        .collect();
    let tasks: Vec<_> = workers.iter().map(start).collect();
    memory.publish("t", (0..6).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    for worker in &workers {
        until(worker, |s| s.succeeded >= 2).await;
    }
    until(&workers[0], |_| workers.iter().map(|w| w.stats().succeeded).sum::<u64>() >= 6).await;
    for worker in &workers {
        worker.shutdown();
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 6);
    // A message held behind a running one would wait the whole `SLOW`.
    let longest = waits.iter().max().unwrap();
    assert!(*longest < SLOW / 2, "a message waited {longest:?} on its worker: {waits:?}");
}

/// Where consumers own whole partitions, a worker holds
/// `PARTITIONED_PREFETCH` messages beyond its handlers unless told
/// otherwise; elsewhere only what its handlers run.
#[tokio::test]
async fn the_default_window_follows_partition_ownership() {
    for (owned, prefetch, held) in [(true, None, 1 + PARTITIONED_PREFETCH), (true, Some(0), 1), (false, None, 1)] {
        let memory = crate::connect("memory://").await.unwrap();
        memory.ensure_group("t", "g").await.unwrap();
        memory.publish("t", (0..150).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
        let broker = FaultyBroker { owned_partitions: owned, ..FaultyBroker::new(memory, 0, 0) };
        // Handlers wait until the gate closes: what was received is held.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = Arc::clone(&gate);
        let handler = move |_job: Job| {
            let g = Arc::clone(&g);
            async move {
                let _ = g.acquire().await;
                Ok::<(), HandlerError>(())
            }
        };
        let mut options = WorkerOptions::default().poll_wait(Duration::from_millis(20));
        options.prefetch = prefetch;
        let worker = Worker::new(Arc::new(broker), "t", "g", handler, options).unwrap();
        let task = start(&worker);
        until(&worker, |s| s.received >= held as u64).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(worker.stats().received, held as u64, "owned partitions {owned}, prefetch {prefetch:?}");
        gate.close();
        worker.shutdown();
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_wait_run_concurrency_at_once() {
    let peak = peak_running(4, 8, || tokio::time::sleep(Duration::from_millis(100))).await;
    assert_eq!(peak, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_work_without_waiting_spread_over_threads() {
    // Never yields: only the time it takes tells its loop to wake another.
    let peak = peak_running(4, 8, || async { std::thread::sleep(Duration::from_millis(20)) }).await;
    assert!(peak >= 2, "one loop ran every busy handler in turn (peak {peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_handlers_after_quick_ones_still_spread_over_threads() {
    // 200 handlers that finish at once (the loop looks at the clock
    // less and less often), then 16 that block 20 ms each.
    let (calls, running, peak) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r, p) = (Arc::clone(&calls), Arc::clone(&running), Arc::clone(&peak));
    peak_running(4, 216, move || {
        let busy = c.fetch_add(1, Ordering::SeqCst) >= 200;
        let (r, p) = (Arc::clone(&r), Arc::clone(&p));
        async move {
            if busy {
                p.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                r.fetch_sub(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak >= 2, "one loop ran every busy handler in turn (peak {peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_dropped_while_its_receive_finishes_leaves_nothing_stuck() {
    let inner = crate::connect("memory://").await.unwrap();
    let broker = Arc::new(FaultyBroker { hold_once: AtomicBool::new(true), ..FaultyBroker::new(inner, 0, 0) });
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", vec![Message::new("late")]).await.unwrap();
    // The default 30 s lease: longer than the test waits.
    let options = WorkerOptions::default().poll_wait(Duration::from_millis(20));
    let worker = Worker::new(Arc::clone(&broker) as Arc<dyn Broker>, "t", "g", no_op, options).unwrap();
    let task = start(&worker);
    // The first run's receive has the message and has not returned it yet.
    broker.holding.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let again = start(&worker);
    // The receive returns only once the second run has begun: its
    // message must reach the second run, not a list nobody serves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    broker.go_on.notify_one();
    until_succeeded(&worker, 1).await;
    worker.shutdown();
    again.await.unwrap().unwrap();
    assert_eq!(worker.stats().succeeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_errors_give_their_slots_back() {
    // One slot: a failed receive that kept it would leave none to receive with.
    let inner = crate::connect("memory://").await.unwrap();
    let broker: Arc<dyn Broker> = Arc::new(FaultyBroker::new(inner, 2, 0));
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", (0..3).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    let worker = Worker::new(broker, "t", "g", no_op, WorkerOptions::default()).unwrap();
    let task = start(&worker);
    // Two failures: backoff 100 + 200 ms.
    until_succeeded(&worker, 3).await;
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(worker.stats().succeeded, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_that_panics_does_not_stop_the_acker() {
    let inner = crate::connect("memory://").await.unwrap();
    let broker: Arc<dyn Broker> = Arc::new(FaultyBroker::new(inner, 0, 1));
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", vec![Message::new("first")]).await.unwrap();
    let options = WorkerOptions::default().lease(Duration::from_millis(200)).poll_wait(Duration::from_millis(20));
    let worker = Worker::new(Arc::clone(&broker), "t", "g", no_op, options).unwrap();
    let task = start(&worker);
    until_succeeded(&worker, 1).await;
    broker.publish("t", (0..3).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    // The first ack panicked: that message comes back after its lease
    // and is handled again; the later ones are acked.
    // Successes count once acked: at five, nothing is left to ack.
    until_succeeded(&worker, 5).await;
    let stats = broker.inspect("t", "g").await.unwrap();
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, Some(0)), "every message acked");
    assert_eq!(worker.stats().succeeded, 5);
    assert_eq!(worker.stats().settle_errors, 1);
}

/// Handlers still running when the shutdown grace ends are stopped, and
/// their messages and idempotency claims handed back at once, without
/// counting an attempt, whether the broker leases deliveries or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_past_the_shutdown_grace_hand_their_messages_back() {
    for leases in [true, false] {
        let inner = crate::connect("memory://").await.unwrap();
        let broker: Arc<dyn Broker> = Arc::new(FaultyBroker { leases, ..FaultyBroker::new(inner, 0, 0) });
        broker.ensure_group("t", "g").await.unwrap();
        broker.publish("t", vec![Message::new("stuck").with_idempotency_key("k")]).await.unwrap();
        let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
        let options = WorkerOptions::default()
            .idempotency_store(Arc::clone(&store))
            .poll_wait(Duration::from_millis(20))
            .shutdown_grace(Duration::from_millis(100));
        let stuck = |_: Job| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), HandlerError>(())
        };
        let worker = Worker::new(Arc::clone(&broker), "t", "g", stuck, options.clone()).unwrap();
        let task = start(&worker);
        until(&worker, |s| s.received >= 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        worker.shutdown();
        task.await.unwrap().unwrap();
        assert_eq!(worker.stats().released, 1, "leases: {leases}");
        let stats = broker.inspect("t", "g").await.unwrap();
        assert_eq!((stats.ready, stats.in_flight), (1, Some(0)), "leases: {leases}");

        let attempts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&attempts);
        let record = move |job: Job| {
            seen.lock().unwrap().push(job.attempt());
            async { Ok::<(), HandlerError>(()) }
        };
        let next = Worker::new(broker, "t", "g", record, options).unwrap();
        let task = start(&next);
        until_succeeded(&next, 1).await;
        next.shutdown();
        task.await.unwrap().unwrap();
        assert_eq!(*attempts.lock().unwrap(), vec![1], "leases: {leases}");
        assert_eq!(next.stats().deferred, 0, "the claim was not released (leases: {leases})");
    }
}

/// A handler that hands its job to work outside its own future (as the
/// bindings do with a Python coroutine or a JavaScript promise), then
/// waits far longer than any test; the outside work reports when it
/// sees the job cancelled, and the job's deadline.
fn hands_off(
    seen: tokio::sync::mpsc::UnboundedSender<(Option<SystemTime>, bool)>,
) -> impl Fn(Job) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), HandlerError>> + Send>>
       + Send
       + Sync
       + 'static {
    move |job: Job| {
        let seen = seen.clone();
        Box::pin(async move {
            let outside = job.clone();
            tokio::spawn(async move {
                let in_time = tokio::time::timeout(Duration::from_secs(20), outside.cancelled()).await.is_ok();
                let _ = seen.send((outside.deadline, in_time));
            });
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_cancelled_and_knew_its_deadline() {
    let broker = crate::connect("memory://").await.unwrap();
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", vec![Message::new("slow")]).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = WorkerOptions::default()
        .handler_timeout(Duration::from_millis(200))
        .retry(RetryPolicy::retries(0))
        .poll_wait(Duration::from_millis(20));
    let started = SystemTime::now();
    let worker = Worker::new(broker, "t", "g", hands_off(tx), options).unwrap();
    let task = start(&worker);
    let (deadline, cancelled) = rx.recv().await.unwrap();
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert!(cancelled, "the job was never cancelled");
    let deadline = deadline.expect("a job with a timeout has a deadline");
    assert!(deadline >= started + Duration::from_millis(200), "deadline {deadline:?} before the timeout");
    assert!(deadline <= SystemTime::now(), "deadline {deadline:?} after the cancellation");
    assert_eq!(worker.stats().dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_running_past_the_shutdown_grace_are_cancelled() {
    let broker = crate::connect("memory://").await.unwrap();
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", vec![Message::new("stuck")]).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (running_tx, mut running) = tokio::sync::mpsc::unbounded_channel();
    let handler = hands_off(tx);
    let noting = move |job: Job| {
        let _ = running_tx.send(());
        handler(job)
    };
    let options =
        WorkerOptions::default().shutdown_grace(Duration::from_millis(100)).poll_wait(Duration::from_millis(20));
    let worker = Worker::new(broker, "t", "g", noting, options).unwrap();
    let task = start(&worker);
    running.recv().await.unwrap();
    worker.shutdown();
    task.await.unwrap().unwrap();
    let (deadline, cancelled) = rx.recv().await.unwrap();
    assert!(cancelled, "the job was never cancelled");
    assert_eq!(deadline, None, "no timeout, no deadline");
    assert_eq!(worker.stats().released, 1);
}

#[tokio::test]
async fn a_job_that_finished_is_not_cancelled() {
    let broker = crate::connect("memory://").await.unwrap();
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", vec![Message::new("quick")]).await.unwrap();
    let kept = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&kept);
    let handler = move |job: Job| {
        *keep.lock().unwrap() = Some(job);
        async { Ok::<(), HandlerError>(()) }
    };
    let options = WorkerOptions::default().handler_timeout(Duration::from_secs(5)).poll_wait(Duration::from_millis(20));
    let worker = Worker::new(broker, "t", "g", handler, options).unwrap();
    let task = start(&worker);
    until_succeeded(&worker, 1).await;
    worker.shutdown();
    task.await.unwrap().unwrap();
    let job = kept.lock().unwrap().take().expect("the handler ran");
    assert!(!job.is_cancelled(), "a finished job reads as cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_at_once_is_refused_as_already_running() {
    let broker = crate::connect("memory://").await.unwrap();
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", vec![Message::new("first")]).await.unwrap();
    let options = WorkerOptions::default().poll_wait(Duration::from_millis(20));
    let worker = Worker::new(broker, "t", "g", no_op, options).unwrap();
    let task = start(&worker);
    until_succeeded(&worker, 1).await;
    let second = worker.run().await.unwrap_err();
    assert_eq!(second.code(), "ALREADY_RUNNING", "{second}");
    worker.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_stops_receiving_and_the_worker_can_run_again() {
    let broker = crate::connect("memory://").await.unwrap();
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", vec![Message::new("first")]).await.unwrap();
    // Room to receive more than one: a fetcher left running would take all five.
    let options = WorkerOptions::default().prefetch(10).poll_wait(Duration::from_millis(20));
    let worker = Worker::new(Arc::clone(&broker), "t", "g", no_op, options).unwrap();
    let task = start(&worker);
    until_succeeded(&worker, 1).await;
    assert_eq!(worker.stats().succeeded, 1);
    // Dropped mid-run (as a `select!` or a cancelled task does).
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // A receive under way when the run was dropped ends within its poll
    // wait: its fetcher lets go of the worker's fetching lock then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while worker.inner.fetching.try_lock().is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(worker.inner.fetching.try_lock().is_ok(), "the dropped run's fetcher never stopped");
    let received = worker.stats().received;
    broker.publish("t", (0..5).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(worker.stats().received, received, "a dropped run received on");
    let task = start(&worker);
    until_succeeded(&worker, 6).await;
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(worker.stats().succeeded, 6);
}

/// A run dropped half-way, with a handler mid-message and more messages
/// waiting for it, leaves nothing stuck: the next run hands them back
/// and handles them at once (before, their leases were renewed for a
/// handler that was gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_dropped_mid_message_leaves_nothing_stuck() {
    let broker = crate::connect("memory://").await.unwrap();
    broker.ensure_group("t", "g").await.unwrap();
    broker.publish("t", (0..5).map(|i| Message::new(format!("{i}"))).collect()).await.unwrap();
    let stuck = Arc::new(AtomicBool::new(true));
    let is_stuck = Arc::clone(&stuck);
    let handler = move |_: Job| {
        let stuck = is_stuck.load(Ordering::SeqCst);
        async move {
            if stuck {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<(), HandlerError>(())
        }
    };
    // The default 30 s lease: longer than the test waits.
    let options = WorkerOptions::default().prefetch(4).poll_wait(Duration::from_millis(20));
    let worker = Worker::new(Arc::clone(&broker), "t", "g", handler, options).unwrap();
    let task = start(&worker);
    until(&worker, |s| s.received >= 5).await;
    assert_eq!(worker.stats().received, 5);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    stuck.store(false, Ordering::SeqCst);
    let task = start(&worker);
    until_succeeded(&worker, 5).await;
    worker.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(worker.stats().succeeded, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_finish_at_once_all_run() {
    peak_running(16, 2_000, || async {}).await;
}
