//! [`WakeGate`]: a future that a `select!` loop polls on every turn, but that is
//! itself polled only after it has woken the task.
//!
//! A session's loop wakes for caller audio, upstream audio and its frame clock,
//! fifty times a second or more, and every turn polls every branch again. For a
//! branch that almost never completes, such as the server's stop signal, each of
//! those polls was work thrown away: a `CancellationToken`'s wait takes the
//! token's lock on every poll to compare wakers, and every call shares the
//! server's token, so the calls on both cores took one lock (BENCHMARKS.md,
//! issue 17, eleventh session). The gate hands the inner future a waker of its
//! own, which marks the gate before waking the task; until it is marked, a poll
//! is one atomic swap.
//!
//! No I/O, no clock; std only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Polls `F` on its first poll, then only after `F` has asked to be polled (or
/// when the task's waker is not the one `F` was given).
pub struct WakeGate<F> {
    future: F,
    /// The mark `waker` sets; `None` until the first poll.
    mark: Option<Arc<Mark>>,
    /// The waker `F` is polled with.
    waker: Waker,
}

/// Set by `F`'s waker; the task's waker is woken with it.
struct Mark {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl<F> WakeGate<F> {
    pub fn new(future: F) -> Self {
        Self {
            future,
            mark: None,
            waker: Waker::noop().clone(),
        }
    }
}

impl<F: Future + Unpin> Future for WakeGate<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        match &this.mark {
            // Cleared before the poll below, so a wake during it is not lost.
            Some(mark) if mark.task.will_wake(cx.waker()) => {
                if !mark.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
            }
            _ => {
                let mark = Arc::new(Mark {
                    woken: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                this.waker = Waker::from(mark.clone());
                this.mark = Some(mark);
            }
        }
        Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set, waking through the waker it
    /// was last given when `wake` is called.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
    }

    impl Probe {
        fn wake(&self) {
            if let Some(w) = self.waker.lock().unwrap().take() {
                w.wake();
            }
        }
    }

    struct Polled(Arc<Probe>);

    impl Future for Polled {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if self.0.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_when_it_woke_the_task() {
        let probe = Arc::new(Probe::default());
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut gate = WakeGate::new(Polled(probe.clone()));
        for _ in 0..100 {
            assert!(Pin::new(&mut gate).poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
        // A wake that finds it still pending: one more poll, then quiet again.
        probe.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        for _ in 0..10 {
            assert!(Pin::new(&mut gate).poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        probe.ready.store(true, Ordering::SeqCst);
        probe.wake();
        assert!(Pin::new(&mut gate).poll(&mut cx).is_ready());
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn another_task_waker_polls_the_inner_future_again() {
        let probe = Arc::new(Probe::default());
        let (first, second) = (Arc::new(Task::default()), Arc::new(Task::default()));
        let mut gate = WakeGate::new(Polled(probe.clone()));
        let waker = Waker::from(first.clone());
        assert!(
            Pin::new(&mut gate)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let waker = Waker::from(second.clone());
        assert!(
            Pin::new(&mut gate)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        // The inner future now wakes the second task, not the first.
        probe.wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cancellation_ends_a_loop_kept_busy_by_other_branches() {
        let token = tokio_util::sync::CancellationToken::new();
        let mut stop = WakeGate::new(Box::pin(token.clone().cancelled_owned()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
        let canceller = tokio::spawn({
            let token = token.clone();
            async move {
                for i in 0..50 {
                    tx.send(i).await.unwrap();
                    tokio::task::yield_now().await;
                }
                token.cancel();
                std::future::pending::<()>().await;
            }
        });
        let mut received = 0;
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    biased;
                    () = &mut stop => break,
                    Some(_) = rx.recv() => received += 1,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the cancellation was not seen");
        // All but what the channel still held when the token was cancelled.
        assert!(received >= 50 - 8, "{received}");
        canceller.abort();
        // Already cancelled: a new gate completes on its first poll.
        WakeGate::new(Box::pin(token.cancelled_owned())).await;
    }
}
