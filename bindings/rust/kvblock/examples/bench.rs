//! Overhead of the Rust binding: match + release of a cached 16-block prefix, ns per
//! block; the same loop as bindings/bench/match16.c (best of 5 runs after a warm-up).
//! `cargo run --release --example bench [iters]`
use kvblock::{hash_tokens, Pool};
use std::time::Instant;

fn main() -> Result<(), kvblock::Error> {
    let iters: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let pool = Pool::new(1024)?;
    let tokens: Vec<u32> = (0..256).collect();
    let h = hash_tokens(&tokens, 16, 0)?;
    drop(pool.put(&h)?); // cached
    let mut best = [f64::MAX; 2];
    let mut reused = kvblock::Blocks::new();
    for run in -1..5 {
        let t0 = Instant::now();
        for _ in 0..iters {
            let hit = pool.match_prefix(&h)?; // a new Blocks per call
            assert_eq!(hit.len(), 16);
        } // dropped: kvb_block_release_n
        let t1 = Instant::now();
        for _ in 0..iters {
            assert_eq!(pool.match_prefix_into(&h, &mut reused)?, 16); // no allocation
            reused.clear()?; // kvb_block_release_n
        }
        let t2 = Instant::now();
        let per = |d: std::time::Duration| d.as_nanos() as f64 / (iters as f64 * 16.0);
        if run >= 0 {
            best[0] = best[0].min(per(t1 - t0));
            best[1] = best[1].min(per(t2 - t1));
        }
    }
    println!("rust    match+release 16 blocks (new):  {:6.1} ns per block (best of 5 x {})", best[0], iters);
    println!("rust    match+release 16 blocks (into): {:6.1} ns per block (best of 5 x {})", best[1], iters);
    drop(reused);
    pool.close()
}
