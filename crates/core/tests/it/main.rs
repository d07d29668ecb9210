//! Integration tests for `confidant-core`: the fuzz corpora replayed on stable, and the
//! Golomb-coded set against BIP158's vectors.

mod fuzz_corpus;
mod gcs;
