//! The `voxrelay` binary: reads the configuration, sets up logging, binds
//! `0.0.0.0:$PORT` and serves until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use voxrelay::{AppState, Config};

#[tokio::main]
async fn main() -> ExitCode {
    // Exactly one TLS crypto provider, installed before any TLS connection.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
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
    voxrelay [serve]     serve HTTP and WebSocket calls on 0.0.0.0:$PORT
    voxrelay --version

Configuration comes from the environment and a .env file; see .env.example.";

async fn serve() -> ExitCode {
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("error: cannot read .env: {e}");
        return ExitCode::FAILURE;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _log_guard = match voxrelay::telemetry::init(&config.log_dir) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: cannot set up logging in {:?}: {e}", config.log_dir);
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], config.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
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
    if state.config.api_token_generated {
        // Shown once on the console, never written to the log files.
        eprintln!(
            "API_TOKEN is not set; generated one for this run: {}\nSet API_TOKEN to keep a stable token.",
            state.config.api_token.expose()
        );
    }
    if let Some(warning) = state.config.twilio.security_warning() {
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
        tools = ?state.tools.names(),
        "voxrelay listening"
    );
    voxrelay::run(listener, state, voxrelay::shutdown::signal()).await;
    ExitCode::SUCCESS
}
