//! Integration tests for `confidant-core`: the fuzz corpora replayed on stable.

mod fuzz_corpus;
