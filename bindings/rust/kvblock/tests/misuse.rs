//! Misuse the C API allows is impossible here by construction (the compile_fail doc tests
//! in src/lib.rs show double release, outliving the pool and closing a borrowed pool);
//! what remains are runtime errors, reported as Error variants with errno names.
use kvblock::{hash_tokens, Error, Hash, Pool, PoolConfig};

#[test]
fn errors_carry_the_errno_name() {
    assert_eq!(Pool::new(0).unwrap_err(), Error::EINVAL);
    let e = Pool::with_config(&PoolConfig { block_size: 3, ..PoolConfig::new(8) }).unwrap_err();
    assert_eq!(e.name(), "EINVAL");
    assert_eq!(e.code(), -22);
    let pool = Pool::new(4).unwrap();
    let e = pool.allocate(5).unwrap_err();
    assert_eq!(e, Error::ENOSPC);
    assert_eq!(e.name(), "ENOSPC");
    assert!(e.to_string().starts_with("ENOSPC"), "{}", e);
    assert_eq!(pool.available(), 4); // all or nothing: nothing taken
    assert_eq!(Error::from_code(-116), Error::ESTALE);
    assert_eq!(Error::from_code(-9999), Error::Other(-9999));
    pool.check().unwrap();
}

#[test]
fn a_failed_batch_call_releases_what_it_held() {
    let pool = Pool::new(4).unwrap();
    let h = hash_tokens(&(0..32).collect::<Vec<u32>>(), 16, 0).unwrap();
    let m = pool.allocate(3).unwrap();
    assert_eq!(m.stage(&h).unwrap_err(), Error::EINVAL); // 2 hashes for 3 blocks
    assert_eq!(pool.available(), 4);
    // a hash with the invalid mode 3 is EINVAL; the mutables are released
    let bad = Hash(kvblock::ffi::kvb_hash { hi: u64::MAX, lo: 0 });
    assert_eq!(pool.allocate(1).unwrap().stage(&[bad]).unwrap_err(), Error::EINVAL);
    assert_eq!(pool.available(), 4);
    assert_eq!(pool.stats().misuse, 0);
    pool.check().unwrap();
    pool.close().unwrap();
}

#[test]
fn a_leaked_handle_makes_close_refuse() {
    let pool = Pool::new(4).unwrap();
    let h = hash_tokens(&[1u32; 16], 16, 0).unwrap();
    let b = pool.put(&h).unwrap();
    let raw = b.into_vec().pop().unwrap();
    let copy = *raw.as_raw();
    std::mem::forget(raw); // the only way to outlive the borrow checker
    assert_eq!(pool.stats().primary, 1);
    // release it through the raw API so the pool can be destroyed
    let mut c = copy;
    assert_eq!(unsafe { kvblock::ffi::kvb_block_release(&mut c) }, 0);
    // releasing the same raw copy again is the C misuse: -ESTALE, counted, harmless
    let mut c2 = copy;
    assert_eq!(unsafe { kvblock::ffi::kvb_block_release(&mut c2) }, Error::ESTALE.code());
    assert_eq!(pool.stats().misuse, 1);
    pool.check().unwrap();
    pool.close().unwrap();
}

#[test]
fn close_with_a_forgotten_handle_is_ebusy() {
    let pool = Box::leak(Box::new(Pool::new(4).unwrap()));
    let h = hash_tokens(&[1u32; 16], 16, 0).unwrap();
    std::mem::forget(pool.put(&h).unwrap());
    let pool: Pool = unsafe { std::ptr::read(pool) }; // move out of the leaked box
    assert_eq!(pool.close().unwrap_err(), Error::EBUSY); // the pool is leaked, not freed
}
