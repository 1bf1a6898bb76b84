//! psdb-emulator: a local PlanetScale stand-in backed by a real MariaDB.
//!
//! See the module docs of each part; [`mariadb`] is the test harness that
//! starts a private server.

pub mod mariadb;
