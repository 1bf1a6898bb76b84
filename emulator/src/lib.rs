//! psdb-emulator: a local PlanetScale stand-in backed by a real MariaDB.
//!
//! Nobody here can reach PlanetScale, so every honest test and benchmark of
//! the tap runs against this: a vtgate-like MySQL front and the
//! `psdbconnect.v1alpha1.Connect/Sync` and `vtgateservice.Vitess/VStream`
//! gRPC APIs over real MariaDB databases
//! (one per shard), with change capture from ordinary SQL.
//!
//! Typical use from a test:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use psdb_emulator::{mariadb::MariaDb, Emulator, EmulatorConfig};
//! let db = MariaDb::shared()?; // one private mariadbd per test process
//! let emu = Emulator::start(EmulatorConfig::new(db, "ks").shards(&["-80", "80-"])).await?;
//! for shard in ["-80", "80-"] {
//!     db.execute(emu.shard_database(shard), "CREATE TABLE t (id INT PRIMARY KEY)").await?;
//! }
//! emu.refresh_capture().await?; // capture the new table before writing to it
//! db.execute(emu.shard_database("-80"), "INSERT INTO t VALUES (1)").await?;
//! let config = emu.tap_config(); // hand this to the tap
//! # let _ = config; Ok(()) }
//! ```
//!
//! - [`mariadb`]: the harness that starts a private `mariadbd`.
//! - [`emulator`]: the library entry point ([`Emulator`], [`EmulatorConfig`]).
//! - [`grpc`]: the `psdbconnect.v1alpha1.Connect/Sync` front.
//! - [`vstream`]: the `vtgateservice.Vitess/VStream` front, on the same port.
//! - [`mysql_front`]: the vtgate-like MySQL front.
//! - [`capture`]: change capture with triggers (design and limits there).
//! - [`values`]: Vitess fields and cell text.
//! - [`faults`]: faults on demand.
//! - [`tls`]: generated CA and server certificate.
//! - [`ready`]: the binary's ready-file contract.
//! - [`vitess`]: a real Vitess (vtcombo) for the same tests, the truth the
//!   emulator is held to.

pub mod capture;
pub mod emulator;
pub mod faults;
pub mod grpc;
mod listener;
pub mod mariadb;
pub mod mysql_front;
pub mod ready;
pub mod row_key;
pub mod tls;
pub mod values;
pub mod vitess;
pub mod vstream;
pub mod wire;

pub use emulator::{BackingSpec, Emulator, EmulatorConfig, EmulatorError};
pub use faults::{Fault, FaultHandle, FaultKind};
pub use values::ChangeText;
