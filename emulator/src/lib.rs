//! psdb-emulator: a local PlanetScale stand-in backed by a real MariaDB.
//!
//! - [`mariadb`]: the harness that starts a private `mariadbd`.
//! - [`emulator`]: the library entry point ([`Emulator`], [`EmulatorConfig`]).
//! - [`grpc`]: the `psdbconnect.v1alpha1.Connect/Sync` front.
//! - [`mysql_front`]: the vtgate-like MySQL front.
//! - [`capture`]: change capture with triggers (design and limits there).
//! - [`values`]: Vitess fields and cell text.
//! - [`faults`]: faults on demand.
//! - [`tls`]: generated CA and server certificate.
//! - [`ready`]: the binary's ready-file contract.

pub mod capture;
pub mod emulator;
pub mod faults;
pub mod grpc;
pub mod mariadb;
pub mod mysql_front;
pub mod ready;
pub mod tls;
pub mod values;
pub mod wire;

pub use emulator::{BackingSpec, Emulator, EmulatorConfig, EmulatorError};
pub use faults::{Fault, FaultHandle, FaultKind};
pub use values::ChangeText;
