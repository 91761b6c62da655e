//! Who may call what (DESIGN.md, promise 7): a route's API keys and the comparison of the key
//! a client sends against them (`keys`), the rule each route follows and the verdict on a
//! request head (`gate`), and which admin routes reveal internals and to whom (`internals`).
//! Sans IO: reading key files from disk is the watcher's (`plugins::keyfiles`); intake asks
//! these as soon as a request head is parsed, before its body is read or anything is queued.

pub mod gate;
pub mod internals;
pub mod keys;
