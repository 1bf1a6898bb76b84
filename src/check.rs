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
use tracing::info;

use crate::catalog::Catalog;
use crate::config::{Api, ConfigError, Settings};
use crate::error::kind::Kind;
use crate::mysql::{self, MySqlError, RawTable, Tablet};
use crate::psdb::{classify, PsdbClient, PsdbError, StatusClass, Target};
use crate::singer;

/// Whether a step passed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// The whole run's outcome.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    pub name: &'static str,
    pub status: Status,
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
            status: Status::Ok,
            message: message.into(),
            hint: None,
            kind: Kind::Input,
        }
    }

    /// A failed step that the person fixes by changing the config.
    pub fn failed(name: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Step {
        Step {
            name,
            status: Status::Failed,
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
        self.status == Status::Ok
    }
}

/// The whole report, as printed on stdout.
#[derive(Debug, Serialize)]
pub struct Report {
    pub status: Outcome,
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

/// `check`: each step once on stderr (passed steps as log lines, the
/// failed one as the run's final error line, with its hint) and the report
/// as one JSON line on stdout for scripts. A terminal on stdout is a
/// person, who has just read the steps: the JSON is left out there.
pub async fn command(
    settings: Result<Settings, ConfigError>,
    catalog: Option<&Path>,
) -> Result<(), CheckError> {
    let report = match settings {
        Ok(s) => run(&s, catalog).await,
        Err(e) => Report::of(vec![Step::failed(
            "config",
            e.to_string(),
            "fix the config file, or the environment variable the message names",
        )]),
    };
    for step in report.checks.iter().filter(|s| s.passed()) {
        info!(check = step.name, "ok: {}", step.message);
    }
    if !singer::stdout_is_terminal() {
        let mut line = serde_json::to_vec(&report).map_err(std::io::Error::other)?;
        line.push(b'\n');
        singer::print(&line)?;
    }
    match report.checks.into_iter().find(|s| !s.passed()) {
        None => Ok(()),
        Some(step) => Err(CheckError::Failed {
            step: step.name,
            message: step.message,
            hint: step.hint.unwrap_or_default(),
            kind: step.kind,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A step failed; the message carries the step's fix hint.
    #[error("check `{step}` failed: {message}; {hint}")]
    Failed {
        step: &'static str,
        message: String,
        hint: String,
        kind: Kind,
    },
    #[error("writing the check report to stdout failed: {0}")]
    Output(#[from] std::io::Error),
}

impl CheckError {
    /// The failed step's kind: 2 when the person must change the config,
    /// 1 when a rerun may pass.
    pub fn kind(&self) -> Kind {
        match self {
            CheckError::Failed { kind, .. } => *kind,
            CheckError::Output(_) => Kind::Failed,
        }
    }
}

impl Report {
    fn of(checks: Vec<Step>) -> Report {
        let status = if checks.iter().all(Step::passed) {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        Report { status, checks }
    }
}

/// Runs every step. Never fails itself: failures are steps, and the first
/// failed step ends the run.
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
    let steps = async {
        let server = mysql_steps(settings, &mut checks).await?;
        let (target, tables) = keyspace_steps(settings, server, &mut checks)?;
        grpc_step(settings, &target, &mut checks).await?;
        if let Some(path) = catalog_path {
            checks.push(catalog_step(path, &tables));
        }
        Some(())
    };
    let _ = steps.await;
    Report::of(checks)
}

/// What MySQL said about the keyspace.
struct Server {
    shards: Result<Vec<String>, MySqlError>,
    tablets: Result<Vec<Tablet>, MySqlError>,
    tables: Result<Vec<RawTable>, MySqlError>,
}

/// The MySQL login (and TLS with it), then the keyspace's queries.
async fn mysql_steps(settings: &Settings, checks: &mut Vec<Step>) -> Option<Server> {
    let mut conn = match mysql::connect(settings).await {
        Ok(c) => c,
        Err(e) => {
            checks.push(mysql_step(&e, settings));
            return None;
        }
    };
    checks.push(Step::ok(
        "mysql_login",
        format!("logged in as {} at {}", settings.username, settings.mysql),
    ));
    if settings.tls {
        checks.push(Step::ok("tls", "MySQL connection verified over TLS"));
    }
    let shards = mysql::shards(&mut conn, &settings.database).await;
    let tablets = mysql::tablets(&mut conn).await;
    let tables = mysql::describe_schema(&mut conn, &settings.database).await;
    mysql::close(conn).await;
    Some(Server {
        shards,
        tablets,
        tables,
    })
}

/// Keyspace, shards and tablets: the target the gRPC probe reads, and the
/// tables for the catalog step.
fn keyspace_steps(
    settings: &Settings,
    server: Server,
    checks: &mut Vec<Step>,
) -> Option<(Target, Vec<RawTable>)> {
    let keyspace = &settings.database;
    let fail = |checks: &mut Vec<Step>, step: Step| {
        checks.push(step);
        None
    };
    let shards = match server.shards {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            return fail(checks, Step::failed(
                "keyspace",
                format!("SHOW VITESS_SHARDS lists no shards for `{keyspace}`"),
                "check `database`: it must be a Vitess keyspace",
            ))
        }
        Err(e) => {
            return fail(checks, Step::failed(
                "keyspace",
                e.to_string(),
                "the server does not answer SHOW VITESS_SHARDS: is this a PlanetScale or Vitess endpoint?",
            )
            .kind(e.kind()))
        }
    };
    let wanted: Vec<String> = settings.shards.clone().unwrap_or_else(|| shards.clone());
    if let Some(missing) = wanted.iter().find(|s| !shards.contains(s)) {
        return fail(
            checks,
            Step::failed(
                "keyspace",
                format!(
                    "shard `{missing}` is not in keyspace `{keyspace}` (it has {})",
                    shards.join(", ")
                ),
                "fix the `shards` setting",
            ),
        );
    }
    // An empty keyspace is said as that: every later step would blame
    // something else (the gRPC probe needs a table).
    let tables = match server.tables {
        Ok(t) => t,
        Err(e) => {
            let kind = e.kind();
            return fail(
                checks,
                Step::failed("keyspace", e.to_string(), "see the message").kind(kind),
            );
        }
    };
    let Some(probe) = tables.iter().find(|t| !t.is_view) else {
        return fail(checks, Step::failed(
            "keyspace",
            format!(
                "keyspace `{keyspace}` has no tables (shards {}): there is nothing to discover or sync",
                wanted.join(", ")
            ),
            "create a table in the keyspace, or check that `database` names the keyspace that holds your tables",
        ));
    };
    checks.push(Step::ok(
        "keyspace",
        format!("keyspace `{keyspace}` with shards {}", wanted.join(", ")),
    ));
    let cells = tablet_step(
        settings,
        server.tablets.as_deref().unwrap_or_default(),
        checks,
    )?;
    let target = Target {
        keyspace: keyspace.clone(),
        shard: wanted[0].clone(),
        table: probe.name.clone(),
        tablet_type: settings.tablet_type,
        cells,
    };
    Some((target, tables))
}

/// Tablets of the chosen type: their cells.
fn tablet_step(
    settings: &Settings,
    tablets: &[Tablet],
    checks: &mut Vec<Step>,
) -> Option<Vec<String>> {
    let kind = settings.tablet_type.as_str().to_uppercase();
    let cells = match &settings.cells {
        Some(given) => given.clone(),
        None => crate::sync::plan::cells_for(settings, tablets),
    };
    if cells.is_empty() {
        checks.push(Step::failed(
            "tablets",
            format!("no {kind} tablets serve keyspace `{}`", settings.database),
            "choose another tablet type with `use_replica` / `use_rdonly`",
        ));
        return None;
    }
    checks.push(Step::ok(
        "tablets",
        format!("{kind} tablets in cells {}", cells.join(", ")),
    ));
    Some(cells)
}

/// The gRPC login: a `current` peek on one table.
async fn grpc_step(settings: &Settings, target: &Target, checks: &mut Vec<Step>) -> Option<()> {
    let client = match PsdbClient::connect(settings).await {
        Ok(client) => client,
        Err(e) => {
            let hint = match e {
                PsdbError::CaFile { .. } => "fix `tls_ca_file`",
                _ => "PlanetScale serves gRPC on port 443 of `host`",
            };
            checks.push(Step::failed("grpc_login", e.to_string(), hint));
            return None;
        }
    };
    let timeout = settings.timeout.min(Duration::from_secs(30));
    let status = match client.current(target, timeout).await {
        Ok(pos) => {
            let api = client.api_name();
            checks.push(Step::ok(
                "grpc_login",
                format!("{api} answered with position {pos}"),
            ));
            return Some(());
        }
        Err(status) => status,
    };
    let class = classify(&status);
    let vstream = settings.api == Api::Vstream;
    let hint = match class {
        StatusClass::Auth if vstream => "the gRPC login was refused: for a self-hosted vtgate set `grpc_auth` (`static` for --grpc_auth_mode static, `none` without auth); on PlanetScale use a password that may use the gRPC API",
        StatusClass::Auth => "the password works for MySQL but not for the Connect API: create a password with the role that allows Connect (or ask the database owner)",
        _ if vstream => "see the message; check `grpc_host` (vtgate's gRPC port) and `cells`",
        _ => "see the message; the Connect API may be unavailable for this database",
    };
    let message = format!("{:?}: {}", status.code(), status.message());
    checks.push(Step::failed("grpc_login", message, hint).kind(class.kind()));
    None
}

/// With a catalog: every selected table and column exists.
fn catalog_step(path: &Path, tables: &[RawTable]) -> Step {
    let selected = match Catalog::from_path(path).and_then(|c| c.selected()) {
        Ok(s) => s,
        Err(e) => {
            return Step::failed(
                "catalog",
                e.to_string(),
                "regenerate the catalog with `discover`",
            )
        }
    };
    let mut problems = Vec::new();
    for s in &selected {
        let Some(t) = tables.iter().find(|t| t.name == s.table) else {
            problems.push(format!(
                "table `{}` (stream `{}`) does not exist",
                s.table, s.tap_stream_id
            ));
            continue;
        };
        for p in &s.properties {
            if !t.columns.iter().any(|c| c.name == p.name) {
                problems.push(format!("column `{}`.`{}` does not exist", s.table, p.name));
            }
        }
    }
    if problems.is_empty() {
        Step::ok(
            "catalog",
            format!(
                "{} selected streams, every table and column exists",
                selected.len()
            ),
        )
    } else {
        Step::failed(
            "catalog",
            problems.join("; "),
            "rediscover, or deselect what no longer exists",
        )
    }
}
