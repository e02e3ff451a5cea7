//! What the local cloud's tests share: functions whose runtime is a script.

use std::time::Duration;

use prism_cloud::logs::LogSink;
use prism_cloud::provision::FunctionSpec;
use prism_cloud::runtime::RuntimeEnv;
use tokio_util::sync::CancellationToken;

/// `script` written as an executable named `name` in a fresh folder.
pub fn runtime_dir(name: &str, script: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("runtime-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, script).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

pub fn spec(binary: &str) -> FunctionSpec {
    FunctionSpec {
        url: None,
        policy: prism_cloud::iam::Policy::default(),
        logical_id: "Echo".into(),
        name: binary.into(),
        binary: binary.into(),
        environment: Vec::new(),
        timeout: Duration::from_secs(1),
        memory_mb: 128,
        concurrency: 1,
        sqs_sources: Vec::new(),
        stream_sources: Vec::new(),
        schedules: Vec::new(),
    }
}

pub fn env_for(dir: &std::path::Path, shutdown: &CancellationToken) -> RuntimeEnv {
    RuntimeEnv {
        bin_dir: dir.to_owned(),
        base_env: Vec::new(),
        overrides: Vec::new(),
        account_id: "000000000000".into(),
        region: "us-east-1".into(),
        logs: LogSink::new(&dir.join("logs"), false).expect("logs"),
        shutdown: shutdown.clone(),
        tasks: tokio_util::task::TaskTracker::new(),
        cpu: None,
    }
}
