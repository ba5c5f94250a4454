//! `reel`: wiring only. Parses the command line, loads the configuration, probes the kernel,
//! and hands over to the driver. Exit codes: 0 ok, 2 bad configuration or arguments, 1 runtime
//! failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use reel::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "reel", version, about = "SIPREC session recording server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the recorder (embedded defaults when no flag and no file is given).
    Serve(ServeArgs),
    /// Validate a configuration and print the effective settings.
    CheckConfig(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen for SIP on UDP and TCP at this address (replaces the file's UDP/TCP listeners).
    #[arg(long, value_name = "ADDR:PORT")]
    sip: Option<String>,
    /// Where recordings, the spool and quarantine live.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// RTP port range, LO-HI (LO even).
    #[arg(long, value_name = "LO-HI")]
    rtp_ports: Option<String>,
    /// HTTP API (health, metrics) address.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<String>,
    /// Media receive backend.
    #[arg(long, value_name = "auto|uring|epoll")]
    io_backend: Option<String>,
}

impl ServeArgs {
    fn load(&self) -> Result<Config, reel::config::ConfigError> {
        let overrides = Overrides {
            sip: self.sip.clone(),
            data_dir: self.data_dir.clone(),
            rtp_ports: self.rtp_ports.clone(),
            http: self.http.clone(),
            io_backend: self.io_backend.clone(),
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => match args.load() {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("reel: configuration error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let config = match args.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("reel: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging();
            let backend = match reel::media::choose_backend(config.media.io_backend) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("reel: configuration error: media.io_backend: {e}");
                    return ExitCode::from(2);
                }
            };
            tracing::info!(
                backend = backend.backend.as_str(),
                reason = %backend.reason,
                "media I/O backend chosen"
            );
            tracing::info!(
                node = %config.node_name,
                data_dir = %config.data_dir.display(),
                version = env!("CARGO_PKG_VERSION"),
                "reel starting"
            );
            match reel::driver::run(config, backend) {
                Ok(()) => ExitCode::SUCCESS,
                Err(reel::driver::RunError::Config(e)) => {
                    eprintln!("reel: configuration error: {e}");
                    ExitCode::from(2)
                }
                Err(reel::driver::RunError::Runtime(e)) => {
                    tracing::error!("{e}");
                    eprintln!("reel: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("REEL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal: journald and log files get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
