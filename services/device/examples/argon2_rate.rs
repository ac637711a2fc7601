//! The argon2 bound of Validate: PIN verifications per second on every core, with the
//! parameters the service uses: `cargo run --release -p enroll-device --example argon2_rate`.
use std::time::{Duration, Instant};

use enroll_device::domain::pins::{pin_matches, seal_pin};
use enroll_device::domain::secrets::SeedCipher;

fn main() {
    let cipher = SeedCipher::new([("k", "00".repeat(32).as_str())], "k").expect("key");
    let stored = seal_pin("1234", false, &cipher, "S").expect("hash");
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let duration = Duration::from_secs(5);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stored, cipher) = (stored.clone(), cipher.clone());
            std::thread::spawn(move || {
                let mut count = 0u64;
                while started.elapsed() < duration {
                    assert!(!pin_matches("9999", &stored, &cipher, "S"));
                    count += 1;
                }
                count
            })
        })
        .collect();
    let total: u64 = handles
        .into_iter()
        .map(|handle| handle.join().unwrap_or(0))
        .sum();
    println!(
        "argon2id verifications: {:.1}/s on {threads} threads",
        total as f64 / started.elapsed().as_secs_f64()
    );
}
