//! The `voxrelay` binary: reads the configuration, sets up logging, binds
//! `$HOST:$PORT` (`0.0.0.0:8080` by default) and serves until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use voxrelay::{AppState, Config};

// Many small, short-lived allocations per token (JSON values, frames, buffers):
// mimalloc spends far less time on them than glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match voxrelay::server::runtime_builder().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    // Exactly one TLS crypto provider, installed before any TLS connection.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
        Some("call") => {
            // Exit at once: a blocking read of stdin may still be pending, and
            // waiting for it would keep the process alive until Enter is pressed.
            let code = call(&args[1..]).await;
            std::process::exit(code)
        }
        Some("bench") => bench(&args[1..]).await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("voxrelay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str = "\
voxrelay: AI agents on Twilio phone calls

USAGE:
    voxrelay [serve]     serve HTTP and WebSocket calls on $HOST:$PORT (0.0.0.0:8080)
    voxrelay call        talk to an agent from the terminal (see `voxrelay call --help`)
    voxrelay bench       load benchmark on loopback (see `voxrelay bench --help`)
    voxrelay --version

Configuration comes from the environment and a .env file; see .env.example.";

async fn serve() -> ExitCode {
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("error: cannot read .env: {e}");
        return ExitCode::FAILURE;
    }
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A generated API token is kept in a private file, never printed.
    let token_file = if config.api_token_generated {
        let dir = voxrelay::config::api_token::data_dir(&config);
        match voxrelay::config::api_token::keep_generated(&mut config, &dir) {
            Ok(path) => Some(path),
            Err(e) => {
                eprintln!(
                    "error: cannot keep the generated API token in {dir:?}: {e}; set API_TOKEN"
                );
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let _log_guard = match voxrelay::telemetry::init(&config.log_dir) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: cannot set up logging in {:?}: {e}", config.log_dir);
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::new(config.host, config.port);
    match voxrelay::server::raise_open_files_limit(config.max_calls) {
        Ok(limit) if limit < (config.max_calls as u64) * 2 => tracing::warn!(
            limit,
            max_calls = config.max_calls,
            "the open-file limit is low for MAX_CALLS; raise `ulimit -n`"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    let listener = match voxrelay::server::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    let state = match AppState::new(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &token_file {
        tracing::info!(
            file = %path.display(),
            fingerprint = %voxrelay::config::api_token::fingerprint(state.config.api_token.expose()),
            "API_TOKEN is not set: the API token is in this file (owner-only); set API_TOKEN to choose one"
        );
    }
    for warning in [
        state.config.twilio.security_warning(),
        state.config.security.warning(),
    ]
    .into_iter()
    .flatten()
    {
        // Loud on purpose: on the console and in the logs, framed so it is noticed.
        let rule = "!".repeat(78);
        eprintln!("{rule}\nWARNING: {warning}\n{rule}");
        tracing::warn!("SECURITY: {warning}");
    }
    tracing::info!(
        %addr,
        public_url = state.config.public_url.as_deref().unwrap_or("(from request headers)"),
        llm = state.llm.name(),
        model = state.llm.model(),
        store = %state.store.describe(),
        twilio_signatures = if state.config.twilio.validate_signatures { "checked" } else { "NOT checked" },
        twilio_rest = state.twilio.is_some(),
        language = %state.config.relay.language,
        agent = %state.config.agent_name,
        agent_config = state.config.agent_config_path.as_deref().unwrap_or("(none)"),
        tools = ?state.agents.default_agent().tools.names(),
        "voxrelay listening"
    );
    for agent in state.agents.iter().skip(1) {
        let numbers: Vec<&str> = agent
            .config
            .agent
            .numbers
            .iter()
            .map(|n| n.as_str())
            .collect();
        tracing::info!(
            agent = agent.id(),
            name = %agent.config.agent_name,
            numbers = ?numbers,
            max_calls = ?agent.config.agent.max_calls,
            language = %agent.config.relay.language,
            llm = agent.llm.name(),
            model = agent.llm.model(),
            tools = ?agent.tools.names(),
            "agent ready"
        );
    }
    voxrelay::run(listener, state, voxrelay::shutdown::signal()).await;
    ExitCode::SUCCESS
}

async fn call(args: &[String]) -> i32 {
    let options = match voxrelay::sim::CallOptions::from_args(args) {
        Ok(o) => o,
        Err(voxrelay::sim::ArgsError::Help) => {
            println!("{}", voxrelay::sim::USAGE);
            return 0;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", voxrelay::sim::USAGE);
            return 2;
        }
    };
    let mut options = options;
    // The same .env as the server's, so a local call signs like Twilio (or
    // OpenAI, with --sip) would.
    let _ = dotenvy::dotenv();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if options.auth_token.is_none() {
        options.auth_token = env("TWILIO_AUTH_TOKEN");
    }
    if options.sip && options.webhook_secret.is_none() {
        options.webhook_secret = env("OPENAI_WEBHOOK_SECRET");
    }
    let input = tokio::io::BufReader::new(tokio::io::stdin());
    match voxrelay::sim::run(&options, input, tokio::io::stdout()).await {
        Ok(report) if report.ok() => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn bench(args: &[String]) -> ExitCode {
    if args.first().map(String::as_str) == Some("media") {
        return bench_media(&args[1..]).await;
    }
    let options = match voxrelay::bench::BenchOptions::from_args(args) {
        Ok(o) => o,
        Err(voxrelay::bench::BenchArgsError::Help) => {
            println!("{}", voxrelay::bench::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", voxrelay::bench::USAGE);
            return ExitCode::from(2);
        }
    };
    match voxrelay::bench::run(&options).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench_media(args: &[String]) -> ExitCode {
    use voxrelay::bench::media;
    let options = match media::MediaBenchOptions::from_args(args) {
        Ok(o) => o,
        Err(voxrelay::bench::BenchArgsError::Help) => {
            println!("{}", media::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{}", media::USAGE);
            return ExitCode::from(2);
        }
    };
    match media::run(&options).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
