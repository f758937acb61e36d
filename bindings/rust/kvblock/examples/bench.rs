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
    let mut best = f64::MAX;
    for run in -1..5 {
        let t0 = Instant::now();
        for _ in 0..iters {
            let hit = pool.match_prefix(&h)?;
            assert_eq!(hit.len(), 16);
        } // dropped: kvb_block_release_n
        let ns = t0.elapsed().as_nanos() as f64 / (iters as f64 * 16.0);
        if run >= 0 && ns < best {
            best = ns;
        }
    }
    println!("rust    match+release 16 blocks: {:6.1} ns per block (best of 5 x {})", best, iters);
    pool.close()
}
