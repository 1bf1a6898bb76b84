//! The CLI edge: turns parsed arguments into one plan and runs it.
//!
//! Every input is read and validated before anything is written to stdout,
//! so a bad config, catalog or state never leaves half a Singer stream
//! behind.

use std::io::Write;
use std::path::PathBuf;

use tracing::{info, warn};

use crate::about;
use crate::catalog::Catalog;
use crate::cli::{Cli, Command, CommonArgs};
use crate::config::{self, Settings, TabletType};
use crate::discovery::{self, DiscoverOptions};
use crate::error::TapError;
use crate::singer::SingerWriter;
use crate::state::State;

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    About,
    Discover,
    Sync,
    Check,
}

/// Decides the mode from the subcommand and the Singer flags.
pub fn mode(cli: &Cli) -> Result<Mode, TapError> {
    let a = &cli.args;
    if a.about {
        return Ok(Mode::About);
    }
    match cli.command {
        Some(Command::Discover) => return Ok(Mode::Discover),
        Some(Command::Sync) => return Ok(Mode::Sync),
        Some(Command::Check) => return Ok(Mode::Check),
        None => {}
    }
    if a.discover {
        Ok(Mode::Discover)
    } else if a.catalog.is_some() || a.properties.is_some() {
        Ok(Mode::Sync)
    } else {
        Err(TapError::Usage(
            "nothing to do: pass --discover to print the catalog, or --catalog FILE to sync (see --help)"
                .into(),
        ))
    }
}

/// Loads config files and the environment, then applies the flag overrides.
pub fn settings(args: &CommonArgs) -> Result<Settings, TapError> {
    let (mut settings, unknown) = config::load(&args.config)?;
    for (key, origin) in unknown {
        warn!(key = %key, origin = %origin, "ignoring unknown config key");
    }
    let replica = args.use_replica.unwrap_or(false);
    let rdonly = args.use_rdonly.unwrap_or(false);
    if replica && rdonly {
        return Err(TapError::Usage(
            "--use-replica and --use-rdonly were both given; pick at most one".into(),
        ));
    }
    if replica {
        settings.tablet_type = TabletType::Replica;
    } else if rdonly {
        settings.tablet_type = TabletType::Rdonly;
    }
    if let Some(text) = &args.api {
        settings.api = config::Api::parse(text).ok_or_else(|| {
            TapError::Usage(format!(
                "--api {text:?}: must be `psdbconnect` or `vstream`"
            ))
        })?;
    }
    Ok(settings)
}

/// Runs the command. Logging is already set up.
pub async fn run(cli: Cli) -> Result<(), TapError> {
    match mode(&cli)? {
        Mode::About => {
            let text = about::render(cli.args.format);
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Mode::Discover => {
            let settings = settings(&cli.args)?;
            discover(&cli.args, &settings).await
        }
        Mode::Sync => {
            if cli.args.commit.unwrap_or(false) {
                // Silently writing to stdout instead would lose the data.
                return Err(TapError::Usage(
                    "--commit (push to the Stitch Import API) is not supported yet; pipe the output into a Singer target instead".into(),
                ));
            }
            let settings = settings(&cli.args)?;
            let inputs = SyncInputs::load(&cli.args, &settings)?;
            crate::sync::run(&settings, inputs).await
        }
        Mode::Check => check(&cli.args).await,
    }
}

/// `check`: the report's JSON on stdout, each step on stderr; exit 1 when
/// any step failed (a bad config is a failed step too).
async fn check(args: &CommonArgs) -> Result<(), TapError> {
    let catalog = args.catalog.as_deref().or(args.properties.as_deref());
    let report = match settings(args) {
        Ok(s) => crate::check::run(&s, catalog).await,
        Err(e) => crate::check::Report {
            status: "FAILED",
            checks: vec![crate::check::Step {
                name: "config",
                status: "failed",
                message: e.to_string(),
                hint: Some("fix the config file or environment variable named above".into()),
            }],
        },
    };
    for step in &report.checks {
        match &step.hint {
            None => info!(check = step.name, "ok: {}", step.message),
            Some(hint) => {
                tracing::error!(check = step.name, hint = %hint, "FAILED: {}", step.message)
            }
        }
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()?;
    match report.checks.iter().find(|s| !s.passed()) {
        None => Ok(()),
        Some(step) => Err(TapError::Runtime(format!(
            "check `{}` failed: {}",
            step.name, step.message
        ))),
    }
}

async fn discover(args: &CommonArgs, settings: &Settings) -> Result<(), TapError> {
    let tinyint_as_boolean = args.tinyint_as_boolean.unwrap_or(false)
        || settings.do_not_treat_tiny_int_as_boolean == Some(false);
    let opts = DiscoverOptions {
        auto_select: args.auto_select.unwrap_or(false),
        excluded: args
            .excluded_tables
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        incremental: args.incremental.unwrap_or(true),
        tinyint_as_boolean,
    };
    info!(database = %settings.database, endpoint = %settings.mysql, "discovering schema");
    let (catalog, unknown) = discovery::discover(settings, &opts).await?;
    for name in unknown {
        warn!(table = %name, "--excluded-tables names a table that does not exist; check the spelling (names match exactly)");
    }
    info!(streams = catalog.streams.len(), "discovered");
    let mut out = SingerWriter::stdout();
    out.document(&catalog)?;
    Ok(())
}

/// The validated inputs of a sync: catalog and state, read before any output.
#[derive(Debug)]
pub struct SyncInputs {
    pub catalog: Catalog,
    pub catalog_path: PathBuf,
    pub state: State,
    pub state_path: Option<PathBuf>,
}

impl SyncInputs {
    pub fn load(args: &CommonArgs, settings: &Settings) -> Result<SyncInputs, TapError> {
        let catalog_path = args
            .catalog
            .clone()
            .or_else(|| args.properties.clone())
            .ok_or_else(|| {
                TapError::Usage(
                    "sync needs --catalog FILE; create one with `tap-planetscale discover --auto-select`"
                        .into(),
                )
            })?;
        let catalog = Catalog::from_path(&catalog_path)?;
        catalog.selected()?;
        let state = match &args.state {
            // Schedulers pass the state path before the first run has
            // written it: a missing file is a first run, not an error.
            Some(p) if !p.exists() => {
                warn!(state = %p.display(), "state file does not exist yet; starting from scratch");
                State::default()
            }
            Some(p) => {
                let s = State::from_path(p)?;
                s.check_keyspace(&p.display().to_string(), &settings.database)?;
                s
            }
            None => State::default(),
        };
        Ok(SyncInputs {
            catalog,
            catalog_path,
            state,
            state_path: args.state.clone(),
        })
    }
}
