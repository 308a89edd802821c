//! `integration-service [--config FILE] [--print-openapi]`: runs seed
//! 002's integration service. With no file, it runs against the built-in
//! simulators and writes demo tokens to `integration-service.tokens`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use integration_service::app::App;
use integration_service::config::ServiceConfig;

fn usage() -> ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("usage: integration-service [--config FILE] [--print-openapi]");
    }
    ExitCode::from(2)
}

fn log_level() -> tracing::Level {
    match std::env::var("INTEGRATION_SERVICE_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    }
}

fn main() -> ExitCode {
    let mut config_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => match args.next() {
                Some(f) => config_file = Some(PathBuf::from(f)),
                None => return usage(),
            },
            "--print-openapi" => {
                #[allow(clippy::print_stdout)]
                {
                    println!("{}", integration_service::api::openapi_json());
                }
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    tracing_subscriber::fmt()
        .with_max_level(log_level())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config_file.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(kind = %e.kind(), field = e.context_value("field").unwrap_or(""), "{}", e.message());
            ExitCode::FAILURE
        }
    }
}

async fn run(config_file: Option<&Path>) -> crm_core::Result<()> {
    let (config, base) = match config_file {
        Some(f) => (
            ServiceConfig::load(f)?,
            f.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        ),
        None => (ServiceConfig::default(), PathBuf::from(".")),
    };
    let app = App::build(&config, &base).await?;
    if let Some(file) = app.demo_tokens() {
        tracing::info!(file = %file.display(), "demo tokens of workspace `demo` written");
    }
    let server = crm_sync::serve::Server::bind(&config.listen).await?;
    let scheme = if app.is_tls() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{}", server.local_addr());
    if config.jobs.enabled {
        let scheduler = app.scheduler(&config)?;
        tokio::spawn(async move { scheduler.run().await });
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    app.serve(server, shutdown).await
}
