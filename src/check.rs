//! `check`: verify a setup one step after another, each with a reason and a
//! fix hint, before anyone waits for a sync to fail.
//!
//! Steps run in order and stop at the first failure that makes the rest
//! meaningless (no MySQL login, no keyspace), so at most one step fails.
//! The human report goes to stderr, one line a step, the failed step as the
//! run's final error line (with its fix hint); stdout gets one JSON line for
//! scripts. The exit code follows the failed step's [`Kind`]: 2 when the
//! person must change the config, 1 when a rerun may pass.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::{Api, Settings};
use crate::error::Kind;
use crate::mysql::{self, MySqlError};
use crate::psdb::{classify, PsdbClient, PsdbError, StatusClass};

/// One step's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    pub name: &'static str,
    pub status: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What a failure means for the exit code (meaningless when ok).
    #[serde(skip)]
    pub kind: Kind,
}

impl Step {
    fn ok(name: &'static str, message: impl Into<String>) -> Step {
        Step {
            name,
            status: "ok",
            message: message.into(),
            hint: None,
            kind: Kind::Input,
        }
    }

    /// A failed step that the person fixes by changing the config.
    pub fn failed(name: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Step {
        Step {
            name,
            status: "failed",
            message: message.into(),
            hint: Some(hint.into()),
            kind: Kind::Input,
        }
    }

    /// The same step with another exit-code class.
    fn kind(self, kind: Kind) -> Step {
        Step { kind, ..self }
    }

    pub fn passed(&self) -> bool {
        self.status == "ok"
    }
}

/// The whole report, as printed on stdout.
#[derive(Debug, Serialize)]
pub struct Report {
    pub status: &'static str,
    pub checks: Vec<Step>,
}

/// A MySQL connection failure as a step, with the hint that fits it.
fn mysql_step(e: &MySqlError, settings: &Settings) -> Step {
    match e {
        MySqlError::AccessDenied { .. } => Step::failed(
            "mysql_login",
            e.to_string(),
            "a PlanetScale password belongs to one branch: create one for the branch you read",
        ),
        MySqlError::UnknownDatabase { .. } => Step::failed(
            "mysql_login",
            e.to_string(),
            "set `database` to the keyspace name as PlanetScale shows it",
        ),
        MySqlError::Tls { .. } => Step::failed(
            "tls",
            e.to_string(),
            if settings.tls_ca_file.is_some() {
                "the server's certificate is not signed by `tls_ca_file`; fix the file or remove the key to use the system roots"
            } else {
                "the server's certificate is not trusted by the system roots; set `tls_ca_file` for a private CA"
            },
        ),
        MySqlError::Unreachable { .. } | MySqlError::Timeout { .. } => Step::failed(
            "mysql_login",
            e.to_string(),
            "PlanetScale serves MySQL on port 3306 of `host`",
        ),
        _ => Step::failed("mysql_login", e.to_string(), "see the message").kind(e.kind()),
    }
}

/// Runs every step. Never fails itself: failures are steps.
pub async fn run(settings: &Settings, catalog_path: Option<&Path>) -> Report {
    let mut checks = vec![Step::ok(
        "config",
        format!(
            "database `{}`, MySQL {}, gRPC {}, TLS {}",
            settings.database,
            settings.mysql,
            settings.grpc,
            if settings.tls { "on" } else { "off" }
        ),
    )];
    let done = |checks: Vec<Step>| {
        let status = if checks.iter().all(Step::passed) {
            "SUCCEEDED"
        } else {
            "FAILED"
        };
        Report { status, checks }
    };

    // MySQL login, and TLS with it.
    let mut conn = match mysql::connect(settings).await {
        Ok(c) => c,
        Err(e) => {
            checks.push(mysql_step(&e, settings));
            return done(checks);
        }
    };
    checks.push(Step::ok(
        "mysql_login",
        format!("logged in as {} at {}", settings.username, settings.mysql),
    ));
    if settings.tls {
        checks.push(Step::ok("tls", "MySQL connection verified over TLS"));
    }

    // Keyspace, shards and tablets.
    let shards = mysql::shards(&mut conn, &settings.database).await;
    let tablets = mysql::tablets(&mut conn).await;
    let tables = mysql::describe_schema(&mut conn, &settings.database).await;
    mysql::close(conn).await;
    let shards = match shards {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            checks.push(Step::failed(
                "keyspace",
                format!(
                    "SHOW VITESS_SHARDS lists no shards for `{}`",
                    settings.database
                ),
                "check `database`: it must be a Vitess keyspace",
            ));
            return done(checks);
        }
        Err(e) => {
            let kind = if e.is_retryable() {
                Kind::Failed
            } else {
                Kind::Input
            };
            checks.push(
                Step::failed(
                    "keyspace",
                    e.to_string(),
                    "the server does not answer SHOW VITESS_SHARDS: is this a PlanetScale or Vitess endpoint?",
                )
                .kind(kind),
            );
            return done(checks);
        }
    };
    let wanted: Vec<String> = match &settings.shards {
        Some(subset) => subset.clone(),
        None => shards.clone(),
    };
    if let Some(missing) = wanted.iter().find(|s| !shards.contains(s)) {
        checks.push(Step::failed(
            "keyspace",
            format!(
                "shard `{missing}` is not in keyspace `{}` (it has {})",
                settings.database,
                shards.join(", ")
            ),
            "fix the `shards` setting",
        ));
        return done(checks);
    }
    // An empty keyspace is said as that: every later step would blame
    // something else (the gRPC probe needs a table).
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            checks.push(Step::failed("keyspace", e.to_string(), "see the message").kind(e.kind()));
            return done(checks);
        }
    };
    let Some(probe) = tables.iter().find(|t| !t.is_view) else {
        checks.push(Step::failed(
            "keyspace",
            format!(
                "keyspace `{}` has no tables (shards {}): there is nothing to discover or sync",
                settings.database,
                wanted.join(", ")
            ),
            "create a table in the keyspace, or check that `database` names the keyspace that holds your tables",
        ));
        return done(checks);
    };
    checks.push(Step::ok(
        "keyspace",
        format!(
            "keyspace `{}` with shards {}",
            settings.database,
            wanted.join(", ")
        ),
    ));
    let kind = settings.tablet_type.as_str();
    let cells = match &settings.cells {
        Some(given) => given.clone(),
        None => crate::sync::cells_for(settings, tablets.as_deref().unwrap_or_default()),
    };
    if cells.is_empty() {
        checks.push(Step::failed(
            "tablets",
            format!(
                "no {} tablets serve keyspace `{}`",
                kind.to_uppercase(),
                settings.database
            ),
            "choose another tablet type with `use_replica` / `use_rdonly`",
        ));
        return done(checks);
    }
    checks.push(Step::ok(
        "tablets",
        format!(
            "{} tablets in cells {}",
            kind.to_uppercase(),
            cells.join(", ")
        ),
    ));

    // gRPC login: a `current` peek on one table.
    match PsdbClient::connect(settings).await {
        Err(e) => {
            let hint = match e {
                PsdbError::CaFile { .. } => "fix `tls_ca_file`",
                _ => "PlanetScale serves gRPC on port 443 of `host`",
            };
            checks.push(Step::failed("grpc_login", e.to_string(), hint));
            return done(checks);
        }
        Ok(client) => {
            let timeout = settings.timeout.min(Duration::from_secs(30));
            let answer = match settings.api {
                Api::Psdbconnect => {
                    client
                        .current_position(
                            &probe.name,
                            &settings.database,
                            &wanted[0],
                            settings.tablet_type,
                            &cells,
                            timeout,
                        )
                        .await
                }
                Api::Vstream => {
                    crate::sync::vstream::current_position(
                        &client,
                        &settings.database,
                        &wanted[0],
                        &probe.name,
                        settings.tablet_type,
                        &cells,
                        timeout,
                    )
                    .await
                }
            };
            let api = match settings.api {
                Api::Psdbconnect => "Connect",
                Api::Vstream => "VStream",
            };
            match answer {
                Ok(pos) => checks.push(Step::ok(
                    "grpc_login",
                    format!("{api} answered with position {pos}"),
                )),
                Err(status) => {
                    let class = classify(&status);
                    let kind = if class == StatusClass::Auth {
                        Kind::Input
                    } else {
                        Kind::Failed
                    };
                    let hint = match class {
                        StatusClass::Auth if settings.api == Api::Vstream => "the gRPC login was refused: for a self-hosted vtgate set `grpc_auth` (`static` for --grpc_auth_mode static, `none` without auth); on PlanetScale use a password that may use the gRPC API",
                        StatusClass::Auth => "the password works for MySQL but not for the Connect API: create a password with the role that allows Connect (or ask the database owner)",
                        _ if settings.api == Api::Vstream => "see the message; check `grpc_host` (vtgate's gRPC port) and `cells`",
                        _ => "see the message; the Connect API may be unavailable for this database",
                    };
                    checks.push(
                        Step::failed(
                            "grpc_login",
                            format!("{:?}: {}", status.code(), status.message()),
                            hint,
                        )
                        .kind(kind),
                    );
                    return done(checks);
                }
            }
        }
    }

    // With a catalog: every selected table and column exists.
    if let Some(path) = catalog_path {
        match Catalog::from_path(path).and_then(|c| c.selected()) {
            Err(e) => checks.push(Step::failed(
                "catalog",
                e.to_string(),
                "regenerate the catalog with `discover`",
            )),
            Ok(selected) => {
                let mut problems = Vec::new();
                for s in &selected {
                    match tables.iter().find(|t| t.name == s.table) {
                        None => problems.push(format!(
                            "table `{}` (stream `{}`) does not exist",
                            s.table, s.tap_stream_id
                        )),
                        Some(t) => {
                            for p in &s.properties {
                                if !t.columns.iter().any(|c| c.name == p.name) {
                                    problems.push(format!(
                                        "column `{}`.`{}` does not exist",
                                        s.table, p.name
                                    ));
                                }
                            }
                        }
                    }
                }
                if problems.is_empty() {
                    checks.push(Step::ok(
                        "catalog",
                        format!(
                            "{} selected streams, every table and column exists",
                            selected.len()
                        ),
                    ));
                } else {
                    checks.push(Step::failed(
                        "catalog",
                        problems.join("; "),
                        "rediscover, or deselect what no longer exists",
                    ));
                }
            }
        }
    }
    done(checks)
}
