//! Envelope cost against the bare primitives it is made of.
//!
//! For 64 B, 1 KiB and 64 KiB plaintexts: `seal` and `open` through a [`Keyring`], and beside
//! them the raw primitives on the same sizes with the same caching a [`Key`] does (an expanded
//! AES-256 key, a pre-keyed HMAC-SHA-256 cloned per message), into pre-allocated buffers:
//! `raw_encrypt_mac` is AES-256-CBC + PKCS#7 then HMAC over the ciphertext, `raw_mac_decrypt` is
//! HMAC verify then AES-256-CBC decrypt + unpad. The envelope adds the random IV, the header,
//! the topic in the MAC input, the output allocation and the keyring lookup.
//!
//! Two diagnostics explain the gap at small sizes: `seal_fixed_iv` is `seal` without drawing the
//! IV (the test-only `seal_with_iv`), and `parts/getrandom_16B` is the cost of drawing one IV
//! from the operating system, which `seal` pays once per message.
//!
//! `cargo bench -p sealbus --bench envelope -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sealbus::crypto::{Key, Keyring};
use sha2::Sha256;

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
const TOPIC: &str = "sensors/building-7/floor-3/temperature";

fn envelope(c: &mut Criterion) {
    let ring = Keyring::with_key(Key::from_bytes(&[42u8; 32]).unwrap());
    let aes = Aes256::new(&[1u8; 32].into());
    let mac = <Hmac<Sha256> as KeyInit>::new(&[2u8; 64].into());
    let iv = [3u8; 16];

    let mut group = c.benchmark_group("envelope");
    for (size, label) in SIZES {
        let plaintext: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let sealed = ring.seal(TOPIC, &plaintext).unwrap();
        let mut ct_buf = vec![0u8; size + 16];
        let mut pt_buf = vec![0u8; size + 16];
        let ct_len = cbc::Encryptor::<&Aes256>::inner_iv_init(&aes, &iv.into())
            .encrypt_padded_b2b_mut::<Pkcs7>(&plaintext, &mut ct_buf)
            .unwrap()
            .len();
        let ciphertext = ct_buf[..ct_len].to_vec();
        let mut tagger = mac.clone();
        tagger.update(&ciphertext);
        let tag = tagger.finalize().into_bytes();

        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("seal", label), |b| {
            b.iter(|| ring.seal(black_box(TOPIC), black_box(&plaintext)).unwrap())
        });
        let key = ring.get(ring.primary().unwrap()).unwrap();
        group.bench_function(BenchmarkId::new("seal_fixed_iv", label), |b| {
            b.iter(|| {
                key.seal_with_iv(black_box(TOPIC), black_box(&plaintext), iv)
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("raw_encrypt_mac", label), |b| {
            b.iter(|| {
                let ct = cbc::Encryptor::<&Aes256>::inner_iv_init(&aes, &iv.into())
                    .encrypt_padded_b2b_mut::<Pkcs7>(black_box(&plaintext), &mut ct_buf)
                    .unwrap();
                let mut m = mac.clone();
                m.update(ct);
                m.finalize().into_bytes()
            })
        });
        group.bench_function(BenchmarkId::new("open", label), |b| {
            b.iter(|| ring.open(black_box(TOPIC), black_box(&sealed)).unwrap())
        });
        group.bench_function(BenchmarkId::new("raw_mac_decrypt", label), |b| {
            b.iter(|| {
                let mut m = mac.clone();
                m.update(black_box(&ciphertext));
                m.verify_slice(&tag).unwrap();
                cbc::Decryptor::<&Aes256>::inner_iv_init(&aes, &iv.into())
                    .decrypt_padded_b2b_mut::<Pkcs7>(&ciphertext, &mut pt_buf)
                    .unwrap()
                    .len()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parts");
    group.bench_function("getrandom_16B", |b| {
        b.iter(|| {
            let mut iv = [0u8; 16];
            getrandom::getrandom(&mut iv).unwrap();
            iv
        })
    });
    group.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
