//! examples/quickstart.c, in Rust: the same pool, prompt, requests and expected numbers.
use kvblock::{hash_tokens, Pool};

#[test]
fn quickstart() {
    let pool = Pool::new(1024).unwrap();
    let tokens: Vec<u32> = (1000..1040).collect();
    let h = hash_tokens(&tokens, 16, 0).unwrap();
    assert_eq!(h.len(), 2); // the partial third block has no hash

    // First request: nothing cached. Allocate, stage, register.
    let hit = pool.match_prefix(&h).unwrap();
    assert_eq!(hit.len(), 0);
    drop(hit);
    let m = pool.allocate(2).unwrap();
    let ids = m.ids();
    let blocks = m.stage(&h).unwrap().register().unwrap();
    assert_eq!(blocks.ids(), ids);
    drop(blocks); // the blocks stay cached (INACTIVE)

    // Second request with the same prefix: both come back from the cache.
    {
        let got = pool.match_prefix(&h).unwrap().into_vec();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id(), ids[0]);
        assert_eq!(got[1].id(), ids[1]);
        assert_eq!(got[0].use_count(), 1);
    } // released here

    let s = pool.stats();
    assert_eq!(s.inactive, 2);
    assert_eq!(s.reset, 1022);
    assert_eq!(s.match_returned, 2);
    pool.check().unwrap();
    pool.close().unwrap(); // no handle outstanding
}

#[test]
fn single_handles_and_weak_references() {
    let pool = Pool::new(8).unwrap();
    let h = hash_tokens(&(0..48).collect::<Vec<u32>>(), 16, 0).unwrap();
    let mut m = pool.allocate(3).unwrap().into_vec();
    let c = m.remove(0).stage(h[0]).unwrap();
    assert_eq!(c.hash(), h[0]);
    let b = c.register().unwrap();
    let b2 = b.clone();
    assert_eq!(b.use_count(), 2);
    let w = b.downgrade();
    drop(b);
    drop(b2);
    assert_eq!(pool.stats().inactive, 1);
    let up = w.upgrade().unwrap(); // resurrected from the cache
    assert_eq!(up.hash(), h[0]);
    drop(up);
    drop(m); // the two unstaged mutables go back to the free list
    assert_eq!(pool.available(), 8);
    let c = pool.allocate(1).unwrap().into_vec().pop().unwrap().stage(h[1]).unwrap();
    let again = c.reset().unwrap(); // undo staging
    drop(again);
    assert_eq!(pool.stats().staged, 0);
    pool.check().unwrap();
}

#[test]
fn scattered_match_and_metrics() {
    let pool = Pool::with_config(&kvblock::PoolConfig {
        name: Some("gpu".into()),
        evict: kvblock::Evict::LineageArc,
        ..kvblock::PoolConfig::new(64)
    })
    .unwrap();
    assert_eq!(pool.policy_name(), "lineage_arc");
    let h = hash_tokens(&(0..64).collect::<Vec<u32>>(), 16, 0).unwrap();
    let held = pool.put(&[h[0], h[2]]).unwrap();
    let got = pool.match_scattered(&h).unwrap();
    assert_eq!(got.iter().map(|b| b.is_some()).collect::<Vec<_>>(), [true, false, true, false]);
    drop(got);
    drop(held);
    assert!(pool.metrics_text().contains("pool=\"gpu\""));
    assert_eq!(pool.reset_inactive().unwrap(), 2);
    pool.check().unwrap();
}

#[test]
fn a_reused_batch_matches_without_reallocating() {
    let pool = Pool::new(64).unwrap();
    let h = hash_tokens(&(0..64).collect::<Vec<u32>>(), 16, 0).unwrap();
    drop(pool.put(&h).unwrap());
    let mut out = kvblock::Blocks::new();
    assert_eq!(pool.match_prefix_into(&h[..2], &mut out).unwrap(), 2);
    assert_eq!(pool.match_prefix_into(&h, &mut out).unwrap(), 4); // appended
    assert_eq!(out.len(), 6);
    assert_eq!(pool.stats().primary, 4);
    out.clear().unwrap();
    assert_eq!(pool.stats().inactive, 4);
    assert!(out.is_empty());
    pool.check().unwrap();
}
