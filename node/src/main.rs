use replog_node::config::Args;

fn main() {
    let args = Args::from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn,tower=warn".into()),
        )
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("replog-node: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        replog_node::server::run(listener, config, shutdown_signal()).await
    });
    if let Err(e) = result {
        eprintln!("replog-node: {e:#}");
        std::process::exit(1);
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
