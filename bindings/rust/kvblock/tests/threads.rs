//! Threads sharing one pool through std::thread::scope: handles are Send, the pool Sync.
use kvblock::{hash_tokens, Error, Pool};

#[test]
fn pool_and_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
    send_sync::<kvblock::Index>();
    send_sync::<kvblock::Block<'static>>();
    send_sync::<kvblock::Blocks<'static>>();
    send_sync::<kvblock::Mutables<'static>>();
    send_sync::<kvblock::Weak<'static>>();
}

#[test]
fn scoped_threads_share_a_pool() {
    let pool = Pool::new(256).unwrap();
    let shared = hash_tokens(&(0..64).collect::<Vec<u32>>(), 16, 0).unwrap();
    drop(pool.put(&shared).unwrap()); // cached prefix everyone matches
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let pool = &pool;
            let shared = &shared;
            s.spawn(move || {
                for i in 0..500u32 {
                    let hit = pool.match_prefix(shared).unwrap();
                    assert_eq!(hit.len(), 4);
                    let own: Vec<u32> = (0..32).map(|x| t * 1_000_000 + i * 32 + x).collect();
                    let h = hash_tokens(&own, 16, 0).unwrap();
                    match pool.put(&h) {
                        Ok(b) => assert_eq!(b.len(), 2),
                        Err(e) => assert_eq!(e, Error::ENOSPC),
                    }
                    let c = hit.into_vec().pop().unwrap();
                    assert!(c.use_count() >= 1);
                } // released on every thread
            });
        }
    });
    let s = pool.stats();
    assert_eq!(s.primary, 0);
    assert_eq!(s.misuse, 0);
    pool.check().unwrap();
    pool.close().unwrap();
}

#[test]
fn a_block_released_on_another_thread() {
    let pool = Pool::new(8).unwrap();
    let h = hash_tokens(&[5u32; 32], 16, 0).unwrap();
    let b = pool.put(&h).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || drop(b));
    });
    assert_eq!(pool.stats().inactive, 2);
    pool.check().unwrap();
}
