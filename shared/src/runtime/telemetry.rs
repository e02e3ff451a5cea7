//! Logging for every function: `RUST_LOG` filters (default `info`),
//! `PRISM_LOG_FORMAT=json` gives one JSON object per line for CloudWatch.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_target(false);
    if std::env::var("PRISM_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.compact().init();
    }
}
