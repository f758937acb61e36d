//! The fleet index: streams, events, match_tokens / match_hashes.
use kvblock::{Error, HashesKind, Index, IndexEvent, StreamState, Tier};

#[test]
fn match_tokens_and_hashes_find_the_worker_with_the_longest_prefix() {
    let idx = Index::new(16).unwrap();
    let tokens: Vec<u32> = (0..100).collect(); // 6 full blocks
    let h = idx.hashes(&tokens, None, None).unwrap();
    assert_eq!(h.len(), 6);
    let a = idx.add_stream("worker-a", Some(0), HashesKind::Router).unwrap();
    let b = idx.add_stream("worker-b", None, HashesKind::Router).unwrap();
    assert_eq!(idx.add_stream("worker-a", Some(0), HashesKind::Router).unwrap_err(), Error::EEXIST);
    assert_eq!(idx.find_stream("worker-b", None).unwrap(), b);
    idx.apply(a, &[IndexEvent::Stored { hashes: &h[..4], parent: None, tier: Tier::Device, tokens: &[] }], Some(1))
        .unwrap();
    idx.apply(b, &[IndexEvent::Stored { hashes: &h[..2], parent: None, tier: Tier::Device, tokens: &[] },
                   IndexEvent::Stored { hashes: &h[2..6], parent: Some(h[1]), tier: Tier::Host, tokens: &[] }],
              Some(1))
        .unwrap();

    let m = idx.match_tokens(&tokens, 4).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].worker, "worker-b"); // 2 device + 4 host: 2 + 0.8 * 4 = 5.2 > 4
    assert_eq!((m[0].device, m[0].host, m[0].disk), (2, 4, 0));
    assert!((m[0].score - 5.2).abs() < 1e-9);
    assert_eq!(m[0].dp_rank, None);
    assert_eq!(m[1].worker, "worker-a");
    assert_eq!((m[1].device, m[1].dp_rank, m[1].state), (4, Some(0), StreamState::Live));
    assert_eq!(idx.match_hashes(&h, 4).unwrap(), m);
    assert_eq!(idx.match_hashes(&h, 1).unwrap().len(), 1); // k caps the answer

    let (m2, blocks) = idx.match_tokens_with(&tokens, Some("adapter"), None, 4).unwrap();
    assert!(m2.is_empty()); // another salt: other keys
    assert_eq!(blocks, 6);

    idx.apply(b, &[IndexEvent::Removed { hashes: &h[..1], tier: Tier::Device }], None).unwrap();
    let m = idx.match_hashes(&h, 4).unwrap();
    assert_eq!(m[0].worker, "worker-a"); // b lost its first block: no prefix at all
    assert_eq!(m.len(), 1);
    idx.apply(a, &[IndexEvent::Cleared], None).unwrap();
    assert!(idx.match_tokens(&tokens, 4).unwrap().is_empty());
    idx.remove_stream(a).unwrap();
    assert_eq!(idx.remove_stream(a).unwrap_err(), Error::ENOENT);
    assert_eq!(idx.stats().streams, 1);
}

#[test]
fn index_is_shared_between_threads() {
    let idx = Index::new(16).unwrap();
    let tokens: Vec<u32> = (0..64).collect();
    let h = idx.hashes(&tokens, None, None).unwrap();
    let s = idx.add_stream("w", None, HashesKind::Router).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 0..200 {
                let ev = if i % 2 == 0 {
                    IndexEvent::Stored { hashes: &h, parent: None, tier: Tier::Device, tokens: &[] }
                } else {
                    IndexEvent::Removed { hashes: &h, tier: Tier::Device }
                };
                idx.apply(s, &[ev], Some(i)).unwrap();
            }
        });
        for _ in 0..2 {
            sc.spawn(|| {
                for _ in 0..200 {
                    let m = idx.match_tokens(&tokens, 1).unwrap();
                    assert!(m.len() <= 1);
                }
            });
        }
    });
    assert_eq!(idx.stats().batches, 200);
}
