//! The contract suite on the in-memory store.

use stowage_store::MemoryStore;

stowage_store::contract_suite!(|| async { Some((MemoryStore::new(), ())) });
