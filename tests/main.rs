//! Integration tests: the real binary against a private MariaDB server (and,
//! for sync, the emulator). One test binary, so one shared MariaDB serves
//! every test; each test works in a fresh database.

mod support;

mod airbyte;
mod charsets;
mod check;
mod cli;
mod commit;
mod corpus;
mod discover;
mod emulator_objects;
mod faults;
mod front;
mod fuzz;
mod go_peers;
mod keyless;
mod meltano;
mod newuser;
mod progress;
mod reliability;
mod schemas;
mod sync;
mod targets;
mod truncate;
mod unique_key;
mod vitess;
mod vstream_diff;
