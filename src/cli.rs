//! Command line: subcommands, the Singer flags Meltano sends, and the Go
//! tap's flags. This module only records what the user typed; flags that
//! set config keys become the config's last layer
//! ([`CommonArgs::config_flags`]), validated with it.
//!
//! The Go tap used Go's `flag` package, which accepts `-config` as well as
//! `--config` and `-incremental=false` for booleans. [`normalize`] rewrites
//! single-dash long flags to double-dash before clap sees them, and the Go
//! booleans take an optional `=true|false`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config;
use crate::discovery::DiscoverOptions;

/// What the user asked for, after parsing: the subcommand (if any) and every
/// flag given, wherever it was given. `app` reads only this.
#[derive(Debug, Clone)]
pub struct Cli {
    pub command: Option<Command>,
    pub args: CommonArgs,
}

/// The subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Discover,
    Sync,
    Check,
    Relay,
}

/// Parses a full argument list (program name first), Go-style single-dash
/// flags included.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Cli, clap::Error> {
    let argv = Argv::try_parse_from(normalize(args))?;
    Ok(argv.resolve())
}

/// The parser. The top level takes every flag, because the Singer form
/// (`--config C --discover`, as Meltano runs it) has no subcommand; each
/// subcommand takes only the flags it uses, so its `--help` lists only
/// those.
#[derive(Debug, Parser)]
#[command(
    name = "tap-planetscale",
    version,
    about = "Singer tap for PlanetScale and Vitess: discovery over MySQL, full copy and change data capture over gRPC",
    long_about = None,
    after_help = "Singer form (as Meltano runs it):\n  tap-planetscale --config C --discover\n  tap-planetscale --config C --catalog K [--state S]\n  tap-planetscale --about [--format json|markdown]\n\n`tap-planetscale COMMAND --help` lists the flags of one command.\n\nExit codes: 0 ok; 2 change an input (flags, config, catalog, state,\ncredentials, host); 1 the run failed and a rerun may succeed;\n130/143 stopped by SIGINT/SIGTERM."
)]
struct Argv {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    singer: SingerArgs,
    #[command(flatten)]
    discover: DiscoverArgs,
    #[command(flatten)]
    read: ReadArgs,
    #[command(flatten)]
    tablets: TabletArgs,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    import_api: ImportApiArgs,
    #[command(flatten)]
    relay: RelayArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Print the catalog of every table in the database.
    Discover {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        discover: DiscoverArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Copy and then follow the streams selected in --catalog.
    Sync {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        tablets: TabletArgs,
        #[command(flatten)]
        commit: CommitArgs,
        #[command(flatten)]
        import_api: ImportApiArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Verify config, credentials, TLS and reachability.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        catalog: CatalogArgs,
        #[command(flatten)]
        tablets: TabletArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Read Singer messages from stdin (from this tap or any other) and push
    /// them to the Stitch Import API, like the Go project's `http-tap`.
    #[command(alias = "http-tap")]
    Relay {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        import_api: ImportApiArgs,
        #[command(flatten)]
        relay: RelayArgs,
        #[command(flatten)]
        log: LogArgs,
    },
}

impl Argv {
    /// Merges the top-level flags with the subcommand's: flags before the
    /// subcommand still count (`--config c sync --catalog k`), and a flag
    /// given in both places takes the subcommand's value.
    fn resolve(self) -> Cli {
        let mut args = CommonArgs::default();
        self.config.apply(&mut args);
        self.singer.apply(&mut args);
        self.discover.apply(&mut args);
        self.read.apply(&mut args);
        self.tablets.apply(&mut args);
        self.commit.apply(&mut args);
        self.import_api.apply(&mut args);
        self.relay.apply(&mut args);
        self.log.apply(&mut args);
        let command = match self.command {
            None => None,
            Some(Sub::Discover {
                config,
                discover,
                log,
            }) => {
                config.apply(&mut args);
                discover.apply(&mut args);
                log.apply(&mut args);
                Some(Command::Discover)
            }
            Some(Sub::Sync {
                config,
                read,
                tablets,
                commit,
                import_api,
                log,
            }) => {
                config.apply(&mut args);
                read.apply(&mut args);
                tablets.apply(&mut args);
                commit.apply(&mut args);
                import_api.apply(&mut args);
                log.apply(&mut args);
                Some(Command::Sync)
            }
            Some(Sub::Check {
                config,
                catalog,
                tablets,
                log,
            }) => {
                config.apply(&mut args);
                catalog.apply(&mut args);
                tablets.apply(&mut args);
                log.apply(&mut args);
                Some(Command::Check)
            }
            Some(Sub::Relay {
                config,
                import_api,
                relay,
                log,
            }) => {
                config.apply(&mut args);
                import_api.apply(&mut args);
                relay.apply(&mut args);
                log.apply(&mut args);
                Some(Command::Relay)
            }
        };
        Cli { command, args }
    }
}

/// Sets `to` from `from` when `from` was given.
fn give<T: Clone>(to: &mut Option<T>, from: &Option<T>) {
    if from.is_some() {
        to.clone_from(from);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AboutFormat {
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every flag, merged from wherever it was given.
#[derive(Debug, Clone, Default)]
pub struct CommonArgs {
    pub config: Vec<PathBuf>,
    pub discover: bool,
    pub catalog: Option<PathBuf>,
    pub properties: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub recopy: Option<String>,
    pub about: bool,
    pub format: Option<AboutFormat>,
    pub auto_select: Option<bool>,
    pub tinyint_as_boolean: Option<bool>,
    pub incremental: Option<bool>,
    pub excluded_tables: Option<String>,
    pub use_replica: Option<bool>,
    pub use_rdonly: Option<bool>,
    pub api: Option<String>,
    pub commit: Option<bool>,
    pub singer_api_url: Option<String>,
    pub singer_api_token: Option<String>,
    pub batch_size: Option<u64>,
    pub state_directory: Option<PathBuf>,
    pub buffer_size: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

impl CommonArgs {
    /// The flags that set config keys, as the config's last layer (see
    /// [`config::Flags`]): validated with the files and the environment.
    pub fn config_flags(&self) -> config::Flags {
        let mut flags = config::Flags::default();
        // A tablet flag picks its type over the config's: the other one is
        // turned off, unless both flags were given (a conflict).
        let replica = self.use_replica == Some(true);
        let rdonly = self.use_rdonly == Some(true);
        if replica {
            flags.set("use_replica", "--use-replica", true);
            flags.set("use_rdonly", "--use-replica", rdonly);
        }
        if rdonly {
            flags.set("use_rdonly", "--use-rdonly", true);
            flags.set("use_replica", "--use-rdonly", replica);
        }
        if let Some(api) = &self.api {
            flags.set("api", "--api", api.as_str());
        }
        if let Some(streams) = &self.recopy {
            flags.set("recopy", "--recopy", streams.as_str());
        }
        if let Some(commit) = self.commit {
            flags.set("commit", "--commit", commit);
        }
        if let Some(url) = &self.singer_api_url {
            flags.set("singer_api_url", "--singer-api-url", url.as_str());
        }
        if let Some(token) = &self.singer_api_token {
            flags.set("singer_api_token", "--singer-api-token", token.as_str());
        }
        if let Some(n) = self.batch_size {
            flags.set("batch_size", "--batch-size", n);
        }
        if let Some(dir) = &self.state_directory {
            flags.set(
                "state_directory",
                "--state-directory",
                dir.display().to_string(),
            );
        }
        flags
    }

    /// `discover`'s options; tinyint(1) is boolean by flag or by the Go
    /// tap's `do_not_treat_tiny_int_as_boolean: false`.
    pub fn discover_options(&self, settings: &config::Settings) -> DiscoverOptions {
        DiscoverOptions {
            auto_select: self.auto_select.unwrap_or(false),
            excluded: self
                .excluded_tables
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            incremental: self.incremental.unwrap_or(true),
            tinyint_as_boolean: self.tinyint_as_boolean.unwrap_or(false)
                || settings.do_not_treat_tiny_int_as_boolean == Some(false),
        }
    }

    /// The catalog path, given as `--catalog` or the older `--properties`.
    pub fn catalog_path(&self) -> Option<&std::path::Path> {
        self.catalog.as_deref().or(self.properties.as_deref())
    }
}

#[derive(Debug, Clone, Args)]
struct ConfigArgs {
    /// Config file (JSON). Repeatable: later files override earlier ones.
    #[arg(short = 'c', long, action = ArgAction::Append, value_name = "FILE")]
    config: Vec<PathBuf>,
}

impl ConfigArgs {
    fn apply(&self, to: &mut CommonArgs) {
        to.config.extend(self.config.iter().cloned());
    }
}

/// The Singer form's own flags.
#[derive(Debug, Clone, Args)]
struct SingerArgs {
    /// Singer discover mode: print the catalog and exit.
    #[arg(short = 'd', long)]
    discover: bool,
    /// Describe the tap's capabilities and settings, then exit.
    #[arg(long)]
    about: bool,
    /// Output format of --about.
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<AboutFormat>,
}

impl SingerArgs {
    fn apply(&self, to: &mut CommonArgs) {
        to.discover |= self.discover;
        to.about |= self.about;
        give(&mut to.format, &self.format);
    }
}

#[derive(Debug, Clone, Args)]
struct DiscoverArgs {
    /// Select every table and column.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    auto_select: Option<bool>,
    /// Type tinyint(1) as boolean.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    tinyint_as_boolean: Option<bool>,
    /// Mark every stream INCREMENTAL (default true; `--incremental=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    incremental: Option<bool>,
    /// Comma-separated exact table names to leave out.
    #[arg(long, value_name = "TABLES")]
    excluded_tables: Option<String>,
}

impl DiscoverArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.auto_select, &self.auto_select);
        give(&mut to.tinyint_as_boolean, &self.tinyint_as_boolean);
        give(&mut to.incremental, &self.incremental);
        give(&mut to.excluded_tables, &self.excluded_tables);
    }
}

/// `check`'s catalog: the same flags as sync's, without the state.
#[derive(Debug, Clone, Args)]
struct CatalogArgs {
    /// Catalog whose selected tables and columns must exist.
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Legacy name of --catalog.
    #[arg(short = 'p', long, value_name = "FILE")]
    properties: Option<PathBuf>,
}

impl CatalogArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.catalog, &self.catalog);
        give(&mut to.properties, &self.properties);
    }
}

/// What a sync reads: the catalog and the state.
#[derive(Debug, Clone, Args)]
struct ReadArgs {
    /// Catalog selecting the streams to sync.
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Legacy name of --catalog.
    #[arg(short = 'p', long, value_name = "FILE")]
    properties: Option<PathBuf>,
    /// State to resume from (the value of the last STATE message).
    #[arg(short = 's', long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Copy these streams again (comma-separated), under a new version.
    #[arg(long, value_name = "STREAMS")]
    recopy: Option<String>,
}

impl ReadArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.catalog, &self.catalog);
        give(&mut to.properties, &self.properties);
        give(&mut to.state, &self.state);
        give(&mut to.recopy, &self.recopy);
    }
}

/// Which tablets and which gRPC API.
#[derive(Debug, Clone, Args)]
struct TabletArgs {
    /// Read from REPLICA tablets.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    use_replica: Option<bool>,
    /// Read from RDONLY tablets.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    use_rdonly: Option<bool>,
    /// gRPC API to stream with: psdbconnect (default) or vstream.
    #[arg(long, value_name = "API")]
    api: Option<String>,
}

impl TabletArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.use_replica, &self.use_replica);
        give(&mut to.use_rdonly, &self.use_rdonly);
        give(&mut to.api, &self.api);
    }
}

#[derive(Debug, Clone, Args)]
struct CommitArgs {
    /// Commit mode: push records to the Stitch Import API instead of stdout.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    commit: Option<bool>,
}

impl CommitArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.commit, &self.commit);
    }
}

/// The Stitch Import API, for commit mode and the relay.
#[derive(Debug, Clone, Args)]
struct ImportApiArgs {
    /// (commit mode, relay) Import API base URL [default: https://api.stitchdata.com].
    #[arg(long, alias = "api-url", value_name = "URL")]
    singer_api_url: Option<String>,
    /// (commit mode, relay) Import API token.
    #[arg(long, alias = "api-token", value_name = "TOKEN")]
    singer_api_token: Option<String>,
    /// (commit mode, relay) Records per request, at most 1000 [default: 9000, meaning 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// (commit mode, relay) Directory for state files; created if missing.
    #[arg(long, value_name = "DIR")]
    state_directory: Option<PathBuf>,
}

impl ImportApiArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.singer_api_url, &self.singer_api_url);
        give(&mut to.singer_api_token, &self.singer_api_token);
        give(&mut to.batch_size, &self.batch_size);
        give(&mut to.state_directory, &self.state_directory);
    }
}

#[derive(Debug, Clone, Args)]
struct RelayArgs {
    /// (relay) Longest accepted input line, in KiB [default: 16384].
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..))]
    buffer_size: Option<u64>,
}

impl RelayArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.buffer_size, &self.buffer_size);
    }
}

#[derive(Debug, Clone, Args)]
struct LogArgs {
    /// Log level: error, warn, info, debug, trace (default info, or RUST_LOG).
    #[arg(long, value_name = "LEVEL", env = "TAP_PLANETSCALE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log line format on stderr: text, or json in the Singer SDK's
    /// structured shape that Meltano keeps the level of.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "TAP_PLANETSCALE_LOG_FORMAT"
    )]
    log_format: Option<LogFormat>,
}

impl LogArgs {
    fn apply(&self, to: &mut CommonArgs) {
        give(&mut to.log_level, &self.log_level);
        give(&mut to.log_format, &self.log_format);
    }
}

/// Rewrites Go-style single-dash long flags (`-config`, `-incremental=false`)
/// to the double-dash form. Only names clap knows are touched, so values
/// such as shard names (`-80`) pass through.
pub fn normalize<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    // The top level takes every flag (the Singer form), so its names are
    // every name a subcommand knows too.
    let cmd = Argv::command();
    let mut longs: Vec<String> = cmd
        .get_arguments()
        .flat_map(|a| {
            a.get_long()
                .into_iter()
                .chain(a.get_all_aliases().unwrap_or_default())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    longs.extend(["help".to_string(), "version".to_string()]);
    args.into_iter()
        .map(|arg| {
            let Some(s) = arg.to_str() else {
                return arg;
            };
            if s.starts_with("--") || !s.starts_with('-') || s.len() < 3 {
                return arg;
            }
            let name = s[1..].split('=').next().unwrap_or("");
            if longs.iter().any(|l| l == name) {
                OsString::from(format!("-{s}"))
            } else {
                arg
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        super::parse(
            std::iter::once("tap-planetscale")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn meltano_combinations_parse() {
        let cases: &[&[&str]] = &[
            &["--config", "c.json", "--discover"],
            &["--config", "c.json", "--state", "s.json", "--discover"],
            &["--config", "c.json", "--catalog", "k.json", "--discover"],
            &["--config", "c.json", "--catalog", "k.json"],
            &[
                "--config",
                "c.json",
                "--catalog",
                "k.json",
                "--state",
                "s.json",
            ],
            &[
                "--config",
                "c.json",
                "--catalog",
                "k.json",
                "--about",
                "--format=json",
            ],
            &["--about", "--format", "markdown"],
            &[
                "-c", "a.json", "-c", "b.json", "-p", "k.json", "-s", "s.json",
            ],
            &[
                "discover",
                "--config",
                "c.json",
                "--auto-select",
                "--excluded-tables",
                "a,b",
            ],
            &[
                "sync",
                "--config",
                "c.json",
                "--catalog",
                "k.json",
                "--use-replica",
            ],
            &["check", "--config", "c.json"],
            &[
                "sync",
                "--config",
                "c.json",
                "--catalog",
                "k.json",
                "--commit",
                "--singer-api-token",
                "t",
                "--state-directory",
                "st",
                "--batch-size",
                "500",
            ],
            &["relay", "--api-token", "t", "--state-directory", "st"],
            &["http-tap", "-api-token", "t", "-buffer-size", "64"],
        ];
        for args in cases {
            assert!(parse(args).is_ok(), "{args:?}: {:?}", parse(args).err());
        }
    }

    #[test]
    fn go_flags_with_one_dash() {
        let cli = parse(&[
            "-config",
            "c.json",
            "-discover",
            "-auto-select",
            "-incremental=false",
            "-tinyint-as-boolean=true",
            "-excluded-tables",
            "a,b",
        ])
        .expect("go flags");
        assert_eq!(cli.args.config, vec![PathBuf::from("c.json")]);
        assert!(cli.args.discover);
        assert_eq!(cli.args.auto_select, Some(true));
        assert_eq!(cli.args.incremental, Some(false));
        assert_eq!(cli.args.tinyint_as_boolean, Some(true));
        assert_eq!(cli.args.excluded_tables.as_deref(), Some("a,b"));
    }

    #[test]
    fn repeated_config_keeps_order() {
        let cli = parse(&["--config", "a.json", "--config=b.json", "--discover"]).expect("ok");
        assert_eq!(
            cli.args.config,
            vec![PathBuf::from("a.json"), PathBuf::from("b.json")]
        );
    }

    #[test]
    fn misuse_is_a_usage_error() {
        for args in [
            &["--config"][..],
            &["--bogus"],
            &["--format", "yaml", "--about"],
            &["--incremental", "maybe"],
            &["frobnicate"],
        ] {
            let err = parse(args).expect_err("misuse");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    /// Issue 16: each subcommand's --help lists only the flags it takes.
    #[test]
    fn subcommands_take_only_their_own_flags() {
        let cmd = Argv::command();
        let longs = |name: &str| -> Vec<String> {
            let sub = cmd
                .get_subcommands()
                .find(|c| c.get_name() == name)
                .unwrap_or_else(|| panic!("subcommand {name}"));
            sub.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect()
        };
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "discover",
                &[
                    "config",
                    "auto-select",
                    "excluded-tables",
                    "incremental",
                    "log-level",
                ],
                &[
                    "commit",
                    "singer-api-token",
                    "buffer-size",
                    "about",
                    "state",
                    "catalog",
                    "discover",
                ],
            ),
            (
                "sync",
                &[
                    "config",
                    "catalog",
                    "state",
                    "use-replica",
                    "api",
                    "commit",
                    "singer-api-token",
                ],
                &["buffer-size", "about", "format", "auto-select", "discover"],
            ),
            (
                "check",
                &["config", "catalog", "use-rdonly", "api"],
                &[
                    "state",
                    "commit",
                    "singer-api-token",
                    "about",
                    "auto-select",
                ],
            ),
            (
                "relay",
                &[
                    "config",
                    "singer-api-token",
                    "state-directory",
                    "buffer-size",
                ],
                &["catalog", "state", "commit", "about", "auto-select"],
            ),
        ];
        for (name, has, lacks) in cases {
            let got = longs(name);
            for flag in *has {
                assert!(
                    got.iter().any(|g| g == flag),
                    "{name} lacks --{flag}: {got:?}"
                );
            }
            for flag in *lacks {
                assert!(
                    !got.iter().any(|g| g == flag),
                    "{name} has --{flag}: {got:?}"
                );
            }
        }
        // A flag of another command is a usage error there.
        for args in [
            &["discover", "--commit"][..],
            &["discover", "--state", "s.json"],
            &["sync", "--buffer-size", "4"],
        ] {
            let err = parse(args).expect_err("foreign flag");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn flags_before_the_subcommand_still_count() {
        let cli = parse(&[
            "-config",
            "a.json",
            "--log-level",
            "debug",
            "sync",
            "--config",
            "b.json",
            "--catalog",
            "k.json",
        ])
        .expect("parse");
        assert_eq!(cli.command, Some(Command::Sync));
        assert_eq!(
            cli.args.config,
            vec![PathBuf::from("a.json"), PathBuf::from("b.json")]
        );
        assert_eq!(cli.args.catalog, Some(PathBuf::from("k.json")));
        assert_eq!(cli.args.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn values_that_look_like_flags_pass() {
        let v = normalize(["x", "--excluded-tables", "-80", "-c"].map(OsString::from));
        assert_eq!(
            v,
            ["x", "--excluded-tables", "-80", "-c"]
                .map(OsString::from)
                .to_vec()
        );
    }
}
