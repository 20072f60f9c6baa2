//! The `pggate` command: parses the command line, loads the configuration,
//! sets up logging and runs the proxy. Exit codes: 0 clean shutdown, 1 runtime
//! failure, 2 bad configuration or usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use pggate::config::{Config, DEFAULT_PATH};

/// PgGate: a PostgreSQL-protocol proxy with connection pooling and read/write routing.
#[derive(FromArgs)]
struct Args {
    /// configuration file (default /etc/pggate.toml; built-in defaults if that file is absent)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// load and validate the configuration, print the result and exit
    #[argh(switch)]
    check: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    /// log level: error, warn, info, debug or trace (overrides log.level)
    #[argh(option)]
    log_level: Option<String>,
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().map(String::as_str).unwrap_or("pggate");
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&[name], &rest) {
        Ok(a) => a,
        Err(early) => {
            // --help prints usage and succeeds; bad usage exits 2 (SPEC §1).
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("{}", early.output);
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
    };
    if args.version {
        println!("pggate {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let level_override = match args.log_level.as_deref().map(parse_level) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(bad)) => {
            eprintln!("pggate: invalid --log-level \"{bad}\" (error, warn, info, debug or trace)");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (config, origin, defaulted) = match load(args.config.as_deref()) {
        Ok(v) => v,
        Err(problems) => {
            if args.check {
                // --check reports every problem and exits 1 (SPEC §1).
                for p in &problems {
                    println!("{p}");
                }
                return ExitCode::from(EXIT_RUNTIME);
            }
            for p in &problems {
                eprintln!("pggate: {p}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        let mut problems: Vec<String> = config
            .check_files(&origin)
            .iter()
            .map(|p| p.to_string())
            .collect();
        if problems.is_empty() {
            // The files are there: check that they make working TLS set-ups.
            if let Err(e) = pggate::server::tls::TlsSetup::build(&config) {
                problems.push(format!("{origin}: {e}"));
            }
        }
        if problems.is_empty() {
            println!("configuration ok");
            return ExitCode::SUCCESS;
        }
        for p in &problems {
            println!("{p}");
        }
        return ExitCode::from(EXIT_RUNTIME);
    }
    let level = level_override.unwrap_or(config.log.level);
    init_logging(level);
    if defaulted {
        log::info!("{DEFAULT_PATH} not found; running on built-in defaults");
    }
    let problems = config.check_files(&origin);
    if !problems.is_empty() {
        for p in &problems {
            log::error!("{p}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    let source = pggate::server::ConfigSource {
        path: args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
        explicit: args.config.is_some(),
    };
    match pggate::server::run(config, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Loads the named file, or the default path, or the built-in defaults when
/// the default path does not exist. Returns (config, origin, defaulted).
fn load(path: Option<&Path>) -> Result<(Config, String, bool), Vec<String>> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    if !explicit && !path.exists() {
        return Ok((Config::default(), DEFAULT_PATH.to_string(), true));
    }
    let origin = path.display().to_string();
    Config::load(&path)
        .map(|c| (c, origin, false))
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(s.to_string()),
    }
}

fn init_logging(level: log::LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_thread_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .build();
    let _ = simplelog::TermLogger::init(
        level,
        config,
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
}
