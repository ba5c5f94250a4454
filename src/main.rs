//! `reel`: wiring only. Parses the command line, loads the configuration, probes the kernel,
//! and hands over to the driver. Exit codes: 0 ok, 2 bad configuration or arguments, 1 runtime
//! failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

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
    /// SRC simulator and load generator: real SIPREC calls with RTP against a recorder.
    Load(LoadArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("destination").required(true).args(["target", "srv"])))]
struct LoadArgs {
    /// Recorder to call; repeat (or comma-separate) for failover targets, tried in order.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    target: Vec<String>,
    /// Find the recorders by DNS SRV (RFC 2782), e.g. _sip._udp.rec.example.com.
    #[arg(long, value_name = "NAME")]
    srv: Option<String>,
    /// DNS server for --srv (default: the system's).
    #[arg(long, value_name = "ADDR:PORT", requires = "srv")]
    dns: Option<std::net::SocketAddr>,
    /// Calls in total.
    #[arg(long, default_value_t = 1)]
    calls: u64,
    /// Most calls in flight at once (default: --calls).
    #[arg(long)]
    concurrency: Option<u64>,
    /// New calls per second.
    #[arg(long, value_name = "CPS", default_value_t = 100.0)]
    rate: f64,
    /// Media time per call, from the 200 OK to the BYE.
    #[arg(long = "duration-s", value_name = "S", default_value_t = 10.0)]
    duration_s: f64,
    #[arg(long, value_enum, default_value = "udp")]
    transport: LoadTransport,
    #[arg(long, value_enum, ignore_case = true, default_value = "PCMU")]
    codec: LoadCodec,
    /// Metadata dialect (and vendor style of the request).
    #[arg(long, value_enum, default_value = "rfc7865")]
    flavour: LoadFlavour,
    /// Put each call on hold (re-INVITE, inactive, RTP paused) at 1/3 and resume it at 2/3.
    #[arg(long)]
    hold: bool,
    /// No final answer to an INVITE within this: try the next target.
    #[arg(
        long = "failover-timeout-ms",
        value_name = "MS",
        default_value_t = 2000
    )]
    failover_timeout_ms: u64,
    /// How long a failed target is skipped (a 503's Retry-After shortens it).
    #[arg(long = "holddown-s", value_name = "S", default_value_t = 30)]
    holddown_s: u64,
    /// Pause between a call's last RTP packet and its BYE.
    #[arg(long = "bye-delay-ms", value_name = "MS", default_value_t = 100)]
    bye_delay_ms: u64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadTransport {
    Udp,
    Tcp,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadCodec {
    #[value(name = "PCMU")]
    Pcmu,
    #[value(name = "PCMA")]
    Pcma,
    #[value(name = "G722")]
    G722,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadFlavour {
    Rfc7865,
    Broadworks,
    Acme,
    Cube,
}

impl LoadArgs {
    /// The options, or the message naming the flag that is wrong.
    fn options(&self) -> Result<reel::load::run::LoadOptions, String> {
        use reel::load::run::{LoadOptions, Targets};
        use std::net::ToSocketAddrs;
        let targets = match &self.srv {
            Some(name) => Targets::Srv {
                name: name.clone(),
                dns: self.dns,
            },
            None => {
                let mut addrs = Vec::new();
                for t in &self.target {
                    let a = t
                        .to_socket_addrs()
                        .map_err(|e| format!("--target {t}: {e} (want HOST:PORT)"))?
                        .next()
                        .ok_or_else(|| format!("--target {t}: no address"))?;
                    addrs.push(a);
                }
                if addrs.is_empty() {
                    return Err("--target: no address given".into());
                }
                Targets::Fixed(addrs)
            }
        };
        if self.calls == 0 {
            return Err("--calls must be at least 1".into());
        }
        let concurrency = self.concurrency.unwrap_or(self.calls);
        if concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err("--rate must be a positive number of calls per second".into());
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0 && self.duration_s <= 86_400.0) {
            return Err("--duration-s must be more than 0 and at most 86400".into());
        }
        if self.failover_timeout_ms == 0 {
            return Err("--failover-timeout-ms must be at least 1".into());
        }
        Ok(LoadOptions {
            targets,
            calls: self.calls,
            concurrency,
            rate: self.rate,
            duration: std::time::Duration::from_secs_f64(self.duration_s),
            transport: match self.transport {
                LoadTransport::Udp => reel::load::call::Transport::Udp,
                LoadTransport::Tcp => reel::load::call::Transport::Tcp,
            },
            codec: match self.codec {
                LoadCodec::Pcmu => reel::load::rtp_send::Codec::Pcmu,
                LoadCodec::Pcma => reel::load::rtp_send::Codec::Pcma,
                LoadCodec::G722 => reel::load::rtp_send::Codec::G722,
            },
            flavour: match self.flavour {
                LoadFlavour::Rfc7865 => reel::load::body::Flavour::Rfc7865,
                LoadFlavour::Broadworks => reel::load::body::Flavour::Broadworks,
                LoadFlavour::Acme => reel::load::body::Flavour::Acme,
                LoadFlavour::Cube => reel::load::body::Flavour::Cube,
            },
            hold: self.hold,
            failover_timeout: std::time::Duration::from_millis(self.failover_timeout_ms),
            holddown: std::time::Duration::from_secs(self.holddown_s),
            bye_delay: std::time::Duration::from_millis(self.bye_delay_ms),
            progress: !self.quiet,
        })
    }
}

/// `reel load`: 0 when every call succeeded, 1 when any failed or the run could not start,
/// 2 for bad arguments.
fn load(args: &LoadArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("reel load: {e}");
            return ExitCode::from(2);
        }
    };
    reel::load::run::install_signal_handlers();
    let report = match reel::load::run::run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reel load: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", report.summary());
    if args.json {
        println!("{}", report.to_json());
    }
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
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
        Command::Load(args) => load(&args),
        Command::CheckConfig(args) => match args.load() {
            Ok(config) => {
                print!("{}", config.to_toml());
                // As TOML comments, so the output stays a valid configuration file;
                // tuning/check.sh compares these with `nft list`.
                if let Some(split) = reel::driver::tproxy_split(&config) {
                    println!("\n# TPROXY mode expects these nftables rules (tuning/README.md):");
                    for rule in split.nft_rules(config.media.tproxy_port) {
                        println!("# nft {rule}");
                    }
                }
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
