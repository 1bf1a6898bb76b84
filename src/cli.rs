//! Command line: subcommands, the Singer flags Meltano sends, and the Go
//! tap's flags. This module only records what the user typed; `app` turns it
//! into a validated plan.
//!
//! The Go tap used Go's `flag` package, which accepts `-config` as well as
//! `--config` and `-incremental=false` for booleans. [`normalize`] rewrites
//! single-dash long flags to double-dash before clap sees them, and the Go
//! booleans take an optional `=true|false`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tap-planetscale",
    version,
    about = "Singer tap for PlanetScale and Vitess: discovery over MySQL, full copy and change data capture over gRPC",
    long_about = None,
    after_help = "Singer form (as Meltano runs it):\n  tap-planetscale --config C --discover\n  tap-planetscale --config C --catalog K [--state S]\n  tap-planetscale --about [--format json|markdown]\n\nExit codes: 0 ok, 1 runtime failure, 2 usage or input error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Print the catalog of every table in the database.
    Discover,
    /// Copy and then follow the streams selected in --catalog.
    Sync,
    /// Verify config, credentials, TLS and reachability.
    Check,
    /// Read Singer messages from stdin (from this tap or any other) and push
    /// them to the Stitch Import API, like the Go project's `http-tap`.
    #[command(alias = "http-tap")]
    Relay,
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

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Config file (JSON). Repeatable: later files override earlier ones.
    #[arg(short = 'c', long, global = true, action = ArgAction::Append, value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// Singer discover mode: print the catalog and exit.
    #[arg(short = 'd', long, global = true)]
    pub discover: bool,
    /// Catalog selecting the streams to sync.
    #[arg(long, global = true, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// Legacy name of --catalog.
    #[arg(short = 'p', long, global = true, value_name = "FILE")]
    pub properties: Option<PathBuf>,
    /// State to resume from (the value of the last STATE message).
    #[arg(short = 's', long, global = true, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Describe the tap's capabilities and settings, then exit.
    #[arg(long, global = true)]
    pub about: bool,
    /// Output format of --about.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub format: Option<AboutFormat>,

    /// (discover) Select every table and column.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub auto_select: Option<bool>,
    /// (discover) Type tinyint(1) as boolean.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub tinyint_as_boolean: Option<bool>,
    /// (discover) Mark every stream INCREMENTAL (default true; `--incremental=false` to turn off).
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub incremental: Option<bool>,
    /// (discover) Comma-separated exact table names to leave out.
    #[arg(long, global = true, value_name = "TABLES")]
    pub excluded_tables: Option<String>,
    /// (sync) Read from REPLICA tablets.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub use_replica: Option<bool>,
    /// (sync) Read from RDONLY tablets.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub use_rdonly: Option<bool>,

    /// (sync) gRPC API to stream with: psdbconnect (default) or vstream.
    #[arg(long, global = true, value_name = "API")]
    pub api: Option<String>,

    /// (sync) Push records to the Stitch Import API instead of stdout.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub commit: Option<bool>,
    /// (commit mode, relay) Import API base URL [default: https://api.stitchdata.com].
    #[arg(long, global = true, alias = "api-url", value_name = "URL")]
    pub singer_api_url: Option<String>,
    /// (commit mode, relay) Import API token.
    #[arg(long, global = true, alias = "api-token", value_name = "TOKEN")]
    pub singer_api_token: Option<String>,
    /// (commit mode, relay) Records per request, at most 1000 [default: 9000, meaning 1000].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// (commit mode, relay) Directory for state files; created if missing.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_directory: Option<PathBuf>,
    /// (relay) Longest accepted input line, in KiB [default: 16384].
    #[arg(long, global = true, value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub buffer_size: Option<u64>,

    /// Log level: error, warn, info, debug, trace (default info, or RUST_LOG).
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        env = "TAP_PLANETSCALE_LOG_LEVEL"
    )]
    pub log_level: Option<String>,
    /// Log line format on stderr: text, or json in the Singer SDK's
    /// structured shape that Meltano keeps the level of.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "TAP_PLANETSCALE_LOG_FORMAT"
    )]
    pub log_format: Option<LogFormat>,
}

/// Rewrites Go-style single-dash long flags (`-config`, `-incremental=false`)
/// to the double-dash form. Only names clap knows are touched, so values
/// such as shard names (`-80`) pass through.
pub fn normalize<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let cmd = Cli::command();
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
        let argv = normalize(
            std::iter::once("tap-planetscale")
                .chain(args.iter().copied())
                .map(OsString::from),
        );
        Cli::try_parse_from(argv)
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
