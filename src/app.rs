//! The CLI edge: decides the mode and hands it to the module that does it.
//!
//! Every input is read and validated before anything is written to stdout,
//! so a bad config, catalog or state never leaves half a Singer stream
//! behind. Config files, the environment and the flags that set config keys
//! are merged and checked once, in `config`.

use tracing::{info, warn};

use crate::cli::{Cli, Command, CommonArgs};
use crate::commit::{pipe, CommitSettings};
use crate::config::{self, Settings};
use crate::error::TapError;
use crate::singer::{self, SingerWriter};
use crate::sync::{Inputs, SyncError};
use crate::{about, check, discovery, relay};

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    About,
    Discover,
    Sync,
    Check,
    Relay,
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
        Some(Command::Relay) => return Ok(Mode::Relay),
        None => {}
    }
    if a.discover {
        Ok(Mode::Discover)
    } else if a.catalog_path().is_some() {
        Ok(Mode::Sync)
    } else {
        Err(TapError::Usage(
            "nothing to do: pass --discover to print the catalog, or --catalog FILE to sync (see --help)"
                .into(),
        ))
    }
}

/// Runs the command. Logging is already set up.
pub async fn run(cli: Cli) -> Result<(), TapError> {
    let args = &cli.args;
    match mode(&cli)? {
        Mode::About => Ok(singer::print(about::render(args.format).as_bytes())?),
        Mode::Discover => discover(args, &settings(args)?).await,
        Mode::Sync => sync(args).await,
        Mode::Check => Ok(check::command(settings(args), args.catalog_path()).await?),
        Mode::Relay => {
            let commit = config::load_commit(&args.config, &args.config_flags())?;
            let max_line = args
                .buffer_size
                .unwrap_or(relay::DEFAULT_BUFFER_KIB)
                .saturating_mul(1024);
            let max_line = usize::try_from(max_line).unwrap_or(usize::MAX);
            Ok(pipe::relay_stdin(CommitSettings::from_config(commit)?, max_line).await?)
        }
    }
}

/// The settings: config files, the environment, then the flags.
fn settings(args: &CommonArgs) -> Result<Settings, config::ConfigError> {
    let (settings, unknown) = config::load(&args.config, &args.config_flags())?;
    for (key, origin) in unknown {
        warn!(key = %key, origin = %origin, "ignoring unknown config key");
    }
    Ok(settings)
}

async fn sync(args: &CommonArgs) -> Result<(), TapError> {
    let settings = settings(args)?;
    let commit = config::load_commit(&args.config, &args.config_flags())?;
    let commit = match commit.enabled {
        true => Some(CommitSettings::from_config(commit)?),
        false => None,
    };
    let catalog = args.catalog_path().ok_or(SyncError::NoCatalog)?;
    let inputs = Inputs::load(catalog, args.state.clone(), &settings.database)?;
    match commit {
        Some(c) => Ok(pipe::sync(&settings, inputs, c).await?),
        None => Ok(crate::sync::run(&settings, inputs).await?),
    }
}

async fn discover(args: &CommonArgs, settings: &Settings) -> Result<(), TapError> {
    let opts = args.discover_options(settings);
    info!(database = %settings.database, endpoint = %settings.mysql, "discovering schema");
    let (found, unknown) = discovery::discover(settings, &opts).await?;
    for name in unknown {
        warn!(table = %name, "--excluded-tables names a table that does not exist; check the spelling (names match exactly)");
    }
    info!(streams = found.stream_count(), "discovered");
    SingerWriter::stdout().document(&found)?;
    Ok(())
}
