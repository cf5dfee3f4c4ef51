//! Measures the cost of Pier's ID tokens on this machine: minting (RS256 signing), verifying a token seen
//! for the first time (RSA verification), and verifying one seen before (the cache). Run it with
//! `cargo run --release -p pier-identity --example token_bench` (bench/identity.sh does).

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_identity::keys::{KeyRing, RotationPolicy};
use pier_identity::{Issuer, Principal};

fn per_op(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ring = Arc::new(KeyRing::open(dir.path(), RotationPolicy::default()).expect("key ring"));
    let issuer = Issuer::new("https://pier.localhost:8443", ring);
    let who = Principal::ServiceAccount("bench@default.iam.pier.localhost".into());
    let n = 2000u32;

    let start = Instant::now();
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            issuer
                .mint(
                    &who,
                    "1",
                    &format!("https://svc-{i}.pier.localhost"),
                    "1",
                    None,
                )
                .expect("mint")
        })
        .collect();
    let mint = per_op(start.elapsed(), n);

    let start = Instant::now();
    for t in &tokens {
        issuer.verify(t).expect("verify");
    }
    let uncached = per_op(start.elapsed(), n);

    let rounds = 100_000u32;
    let start = Instant::now();
    for i in 0..rounds {
        issuer.verify(&tokens[(i % n) as usize]).expect("verify");
    }
    let cached = per_op(start.elapsed(), rounds);

    println!("RS256 ID tokens, {n} tokens, microseconds per operation:");
    println!(
        "  mint (sign)          {mint:8.1} us  ({:.0}/s on one core)",
        1e6 / mint
    );
    println!(
        "  verify, first sight  {uncached:8.1} us  ({:.0}/s)",
        1e6 / uncached
    );
    println!(
        "  verify, cached       {cached:8.3} us  ({:.0}/s)",
        1e6 / cached
    );
    println!("  cache speed-up       {:8.0}x", uncached / cached);
}
