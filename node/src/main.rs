use replog_node::config::{Args, LogFormat, NodeConfig};

fn main() {
    let args = Args::from_env();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("replog-node: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&config);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        replog_node::server::run(listener, config, shutdown_signal()).await
    });
    if let Err(e) = result {
        tracing::error!(error = format!("{e:#}"), "replog-node stopped on an error");
        eprintln!("replog-node: {e:#}");
        std::process::exit(1);
    }
}

/// Logs to stdout, filtered by the `log` key or RUST_LOG, as text or JSON.
fn init_logging(config: &NodeConfig) {
    // validate() has parsed the filter already; the default parses too.
    let filter = tracing_subscriber::EnvFilter::try_new(config.log_filter())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(replog_node::config::DEFAULT_LOG_FILTER));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => fmt.init(),
        // Fields at the top level, so that log shippers index them as-is.
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
