//! The CLI edge: turns parsed arguments into one plan and runs it.
//!
//! Every input is read and validated before anything is written to stdout,
//! so a bad config, catalog or state never leaves half a Singer stream
//! behind.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use tracing::{info, warn};

use crate::about;
use crate::catalog::Catalog;
use crate::cli::{Cli, Command, CommonArgs};
use crate::commit::state_files;
use crate::commit::{CommitSettings, Committer};
use crate::config::{self, Secret, Settings, TabletType};
use crate::discovery::{self, DiscoverOptions};
use crate::error::TapError;
use crate::relay;
use crate::singer::SingerWriter;
use crate::state::State;

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
            let settings = settings(&cli.args)?;
            let commit = config::load_commit(&cli.args.config)?;
            let commit = if cli.args.commit.unwrap_or(commit.enabled) {
                Some(commit_settings(&cli.args, commit)?)
            } else {
                None
            };
            let inputs = SyncInputs::load(&cli.args, &settings)?;
            match commit {
                Some(c) => sync_commit(&settings, inputs, c).await,
                None => crate::sync::run(&settings, inputs).await,
            }
        }
        Mode::Check => check(&cli.args).await,
        Mode::Relay => {
            let commit = commit_settings(&cli.args, config::load_commit(&cli.args.config)?)?;
            let max_line = cli
                .args
                .buffer_size
                .unwrap_or(relay::DEFAULT_BUFFER_KIB)
                .saturating_mul(1024);
            let dir = commit.state_directory.clone();
            let committer = Committer::new(commit)?;
            let stdin = tokio::io::BufReader::with_capacity(PIPE_BUFFER, tokio::io::stdin());
            let relayed = relay::run(
                stdin,
                committer,
                usize::try_from(max_line).unwrap_or(usize::MAX),
                "stdin",
            )
            .await;
            print_newest_state(&dir)?;
            Ok(relayed.map(|_| ())?)
        }
    }
}

/// Read buffer of the relay's input.
const PIPE_BUFFER: usize = 256 * 1024;

/// Commit mode's settings: config files and environment, then the flags
/// (which win). The token and the state directory are required.
pub fn commit_settings(
    args: &CommonArgs,
    config: config::CommitConfig,
) -> Result<CommitSettings, TapError> {
    let api_token = match (&args.singer_api_token, config.api_token) {
        (Some(t), _) if !t.trim().is_empty() => Secret::new(t.trim()),
        (None, Some(t)) => t,
        _ => {
            return Err(TapError::Usage(
                "commit mode needs an Import API token: pass --singer-api-token TOKEN, or set `singer_api_token` in the config or TAP_PLANETSCALE_SINGER_API_TOKEN".into(),
            ))
        }
    };
    let state_directory = match (&args.state_directory, config.state_directory) {
        (Some(d), _) if !d.as_os_str().is_empty() => d.clone(),
        (None, Some(d)) => d,
        _ => {
            return Err(TapError::Usage(
                "commit mode needs a directory for its state files: pass --state-directory DIR, or set `state_directory` in the config or TAP_PLANETSCALE_STATE_DIRECTORY".into(),
            ))
        }
    };
    let batch_size = match args.batch_size {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => config.batch_size,
    };
    Ok(CommitSettings {
        api_url: args.singer_api_url.clone().unwrap_or(config.api_url),
        api_token,
        batch_size,
        state_directory,
        max_retries: config.max_retries,
        backoff: config.backoff,
        backoff_max: config.backoff_max,
        timeout: config.timeout,
    })
}

/// `sync --commit`: the sync writes its Singer messages into a pipe, and
/// the relay on the other end pushes them to the Import API, on a thread of
/// its own so that a sync blocked on a full pipe can never starve it.
async fn sync_commit(
    settings: &Settings,
    inputs: SyncInputs,
    commit: CommitSettings,
) -> Result<(), TapError> {
    let dir = commit.state_directory.clone();
    let committer = Committer::new(commit)?;
    let setup = |what: &str, e: std::io::Error| {
        TapError::Runtime(format!("cannot start the import API writer ({what}): {e}"))
    };
    let (reader, writer) = std::io::pipe().map_err(|e| setup("pipe", e))?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // The relay's future runs on its own thread but on this runtime's
    // drivers: a second runtime would bring a second signal driver, and
    // the two raced for the process's signals (a SIGTERM could wake only
    // the one nobody listened on).
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("import-api".into())
        .spawn(move || {
            let relayed = runtime.block_on(async move {
                let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(
                    std::os::fd::OwnedFd::from(reader),
                )
                .map_err(|e| setup("pipe", e))?;
                let input = tokio::io::BufReader::with_capacity(PIPE_BUFFER, pipe);
                relay::run(input, committer, usize::MAX, "the sync's output")
                    .await
                    .map_err(TapError::from)
            });
            let _ = done_tx.send(relayed);
        })
        .map_err(|e| setup("thread", e))?;
    let stopped = || Err(TapError::Runtime("the import API writer stopped".into()));
    // Listening starts now, not when the sync is done: a signal that comes
    // while the sync is blocked writing to a full pipe reaches the sync's
    // own listener only after its write, and if that write was its last,
    // a listener made afterwards would never hear it (tokio tells a
    // listener only of signals after its creation), and the upload would
    // run to its end.
    let mut signals = StopSignals::listen();
    let sync = crate::sync::run_into(settings, inputs, writer);
    tokio::pin!(sync);
    let mut done_rx = done_rx;
    let (synced, relayed) = tokio::select! {
        synced = &mut sync => {
            // A signal during the sync stops it and the relay then pushes
            // what was read. Once the sync is done, nothing else listens
            // for signals (the runtime's handler would swallow them), so
            // the upload that remains is stopped here: every state file
            // already written covers only accepted batches.
            let relayed = match &synced {
                Ok(()) => tokio::select! {
                    r = &mut done_rx => r.unwrap_or_else(|_| stopped()),
                    stop = signals.stopped() => Err(stop),
                },
                Err(_) => (&mut done_rx).await.unwrap_or_else(|_| stopped()),
            };
            (synced, relayed)
        }
        // The relay only ends early on an error: stop the sync at once
        // (dropping it stops its readers) rather than at its next write.
        relayed = &mut done_rx => match relayed.unwrap_or_else(|_| stopped()) {
            Err(e) => (Ok(()), Err(e)),
            ok => ((&mut sync).await, ok),
        },
    };
    print_newest_state(&dir)?;
    match (synced, relayed) {
        // A failed relay closes the pipe, so the sync fails too; the
        // relay's error is the cause.
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Ok(_)) => Ok(()),
    }
}

/// SIGTERM and SIGINT, heard from the moment they are created.
struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn listen() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals(Some((term, int))),
            _ => StopSignals(None),
        }
    }

    /// Waits for SIGTERM or SIGINT (one already received counts), as the
    /// error the process exits with.
    async fn stopped(&mut self) -> TapError {
        match &mut self.0 {
            Some((term, int)) => tokio::select! {
                _ = term.recv() => TapError::Interrupted { signal: "SIGTERM", code: 143 },
                _ = int.recv() => TapError::Interrupted { signal: "SIGINT", code: 130 },
            },
            // Without signal handling the upload simply runs to its end.
            None => std::future::pending().await,
        }
    }
}

/// Commit mode's only stdout line: the newest state file, for the next
/// run's `--state`.
fn print_newest_state(dir: &std::path::Path) -> Result<(), TapError> {
    let Some(path) = state_files::newest_in(dir) else {
        warn!(dir = %dir.display(), "no state file written yet");
        return Ok(());
    };
    info!(path = %path.display(), "newest state file");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", path.display())?;
    out.flush()?;
    Ok(())
}

/// `check`: each step once on stderr (passed steps as log lines, the failed
/// one as the run's final error line, with its hint) and the report as one
/// JSON line on stdout for scripts. A terminal on stdout is a person, who
/// has just read the steps: the JSON is left out there.
async fn check(args: &CommonArgs) -> Result<(), TapError> {
    let catalog = args.catalog.as_deref().or(args.properties.as_deref());
    let report = match settings(args) {
        Ok(s) => crate::check::run(&s, catalog).await,
        Err(e) => crate::check::Report {
            status: "FAILED",
            checks: vec![crate::check::Step {
                kind: e.kind(),
                ..crate::check::Step::failed(
                    "config",
                    e.to_string(),
                    "fix the config file, or the environment variable the message names",
                )
            }],
        },
    };
    for step in report.checks.iter().filter(|s| s.passed()) {
        info!(check = step.name, "ok: {}", step.message);
    }
    if !std::io::stdout().is_terminal() {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &report).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    match report.checks.into_iter().find(|s| !s.passed()) {
        None => Ok(()),
        Some(step) => Err(TapError::Check {
            step: step.name,
            message: step.message,
            hint: step.hint.unwrap_or_default(),
            kind: step.kind,
        }),
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
