//! Work spread over threads: one job per item, each thread taking the next item as it
//! finishes one, the results handed back on the calling thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Runs `work` on every item of `items` on up to `threads` threads, and hands each result to
/// `done` on the calling thread as it comes, with the item's index. With one thread (or one
/// item) everything runs on the calling thread. A panic in `work` is raised again here once
/// the other threads have stopped.
pub fn on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
    mut done: impl FnMut(usize, R),
) {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        for (i, item) in items.iter().enumerate() {
            done(i, work(item));
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (tx, next, work) = (tx.clone(), &next, &work);
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        // The receiver is gone only when `done` panicked: stop taking items.
                        if tx.send((i, work(item))).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for (i, result) in rx {
            done(i, result);
        }
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// [`on_threads`], with the results handed to `done` in the order of `items`: each as soon
/// as those before it are done.
pub fn on_threads_in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
    mut done: impl FnMut(usize, R),
) {
    let mut waiting = BTreeMap::new();
    let mut due = 0;
    on_threads(items, threads, work, |i, result| {
        waiting.insert(i, result);
        while let Some(result) = waiting.remove(&due) {
            done(due, result);
            due += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_worked_once_and_handed_back_with_its_index() {
        let items: Vec<u64> = (0..97).collect();
        for threads in [0, 1, 2, 3, 8, 200] {
            let mut seen = vec![None; items.len()];
            on_threads(
                &items,
                threads,
                |&x| x * x,
                |i, r| {
                    assert!(seen[i].is_none(), "item {i} handed back twice");
                    seen[i] = Some(r);
                },
            );
            let expected: Vec<Option<u64>> = items.iter().map(|&x| Some(x * x)).collect();
            assert_eq!(seen, expected, "{threads} threads");
        }
        let mut calls = 0;
        on_threads(&[] as &[u8], 4, |_| (), |_, ()| calls += 1);
        assert_eq!(calls, 0);
    }

    #[test]
    fn in_order_hands_results_back_in_the_items_order() {
        // Early items take longest, so they finish after later ones.
        let items: Vec<u64> = (0..24).collect();
        let mut order = Vec::new();
        on_threads_in_order(
            &items,
            3,
            |&x| {
                std::thread::sleep(std::time::Duration::from_millis(24 - x));
                x + 100
            },
            |i, r| order.push((i, r)),
        );
        let expected: Vec<(usize, u64)> = items.iter().map(|&x| (x as usize, x + 100)).collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn with_more_than_one_thread_the_work_leaves_the_calling_thread() {
        let ids = std::sync::Mutex::new(std::collections::HashSet::new());
        on_threads(
            &[(); 8],
            2,
            |_| {
                ids.lock().unwrap().insert(std::thread::current().id());
            },
            |_, ()| {},
        );
        let ids = ids.into_inner().unwrap();
        assert!(!ids.is_empty());
        assert!(!ids.contains(&std::thread::current().id()));
    }

    #[test]
    #[should_panic(expected = "item 5 fails")]
    fn a_panic_in_work_reaches_the_caller() {
        let items: Vec<usize> = (0..10).collect();
        on_threads(
            &items,
            2,
            |&x| {
                assert!(x != 5, "item {x} fails");
                x
            },
            |_, _| {},
        );
    }
}
