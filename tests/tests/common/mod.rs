//! Starting a private local cloud for one test.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod images;
pub mod openapi;

use std::path::{Path, PathBuf};
use std::time::Duration;

use prism_cloud::proxy::FaultPlan;
use prism_cloud::{CloudOptions, EmulatorChoice, LocalCloud, PrismClient};
use prism_shared::app::auth::TokenKey;

pub const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// A text too large to travel with its `job.process` command, so its
/// processor must read it from S3: for tests whose faults break that read.
pub fn text_read_by_its_processor(line: &str) -> Vec<u8> {
    let carried = prism_shared::domain::commands::Command::MAX_CARRIED_CONTENT;
    format!("{line}\n").repeat(carried / (line.len() + 1) + 1).into_bytes()
}

/// Runs each named test on both emulator setups, as its own two tests:
/// `name::on_localstack` (LocalStack with moto's DynamoDB, the default) and
/// `name::on_the_moto_only_cloud`. Each names an `async fn(EmulatorChoice)`;
/// a leading `#[…]` replaces `#[tokio::test]` on both.
#[allow(unused_macros)] // not every test binary runs on both
macro_rules! on_both_setups {
    (#[$test:meta] $($name:ident),* $(,)?) => {$(
        mod $name {
            #[$test]
            async fn on_localstack() {
                super::$name(prism_cloud::EmulatorChoice::Localstack).await;
            }

            #[$test]
            async fn on_the_moto_only_cloud() {
                super::$name(prism_cloud::EmulatorChoice::Moto).await;
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {
        on_both_setups!(#[tokio::test] $($name),*);
    };
}

pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// Where cargo put the function binaries: the test executable lives in `target/{profile}/deps`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent().and_then(Path::parent).expect("target/{profile}").to_owned()
}

/// A local cloud on free ports with its own state directory, kept only if the test fails.
pub struct TestCloud {
    pub cloud: LocalCloud,
    /// A client acting for owner `tester`.
    pub api: PrismClient,
    key: TokenKey,
    state_dir: PathBuf,
    /// Whether the test took permissions away on purpose (denials expected).
    revokes: bool,
}

impl TestCloud {
    pub async fn start(emulator: EmulatorChoice) -> Self {
        Self::with_faults(emulator, FaultPlan::default()).await
    }

    /// A cloud whose functions' AWS calls and event sources meet `faults`.
    pub async fn with_faults(emulator: EmulatorChoice, faults: FaultPlan) -> Self {
        Self::with(emulator, faults, Vec::new()).await
    }

    /// A cloud with faults and template parameters other than their defaults.
    pub async fn with(emulator: EmulatorChoice, faults: FaultPlan, parameters: Vec<(String, String)>) -> Self {
        let state_dir = project_dir().join("target/prism-e2e").join(uuid_like());
        let secret = prism_cloud::cloud::new_token_secret();
        let revokes = !faults.revoke.is_empty();
        let cloud = LocalCloud::start(CloudOptions {
            project_dir: project_dir(),
            emulator: Some(emulator),
            bin_dir: bin_dir(),
            state_dir: state_dir.clone(),
            echo_logs: false,
            stage: "test".into(),
            token_secret: secret.clone(),
            faults,
            parameters,
            iam: prism_cloud::iam::IamMode::Enforce,
            cpu_by_memory: false,
        })
        .await
        .unwrap_or_else(|e| panic!("local cloud did not start: {e:#} (logs in {})", state_dir.display()));
        let key = TokenKey::new(secret.as_bytes()).expect("key");
        let api = client(&cloud.info.http_url, Some(token(&key, "tester")));
        Self { cloud, api, key, state_dir, revokes }
    }

    /// A client acting for `owner`.
    pub fn client_for(&self, owner: &str) -> PrismClient {
        client(&self.cloud.info.http_url, Some(token(&self.key, owner)))
    }

    /// A bearer token for `owner`.
    pub fn token(&self, owner: &str) -> String {
        token(&self.key, owner)
    }

    /// A token for `owner` that expired an hour ago.
    pub fn expired_token(&self, owner: &str) -> String {
        let issued = chrono::Utc::now() - chrono::Duration::hours(2);
        self.key.issue(owner, chrono::Duration::hours(1), issued).expect("token")
    }

    /// A client with an operator's token (the operator routes).
    pub fn operator(&self) -> PrismClient {
        client(&self.cloud.info.http_url, Some(self.operator_token()))
    }

    /// An operator's token.
    pub fn operator_token(&self) -> String {
        self.key.issue_operator("oncall", chrono::Duration::hours(1), chrono::Utc::now()).expect("token")
    }

    /// A client with no token at all.
    pub fn anonymous(&self) -> PrismClient {
        client(&self.cloud.info.http_url, None)
    }

    /// Where this cloud keeps its state and logs; test artifacts go here too.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state_dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Stops the cloud and removes its state (a failed test keeps it for its
    /// logs). Every test runs with IAM enforced: a call a function's policy
    /// did not allow fails the test here, even where a retry hid it.
    pub async fn finish(self) {
        self.finish_denying(|_| false).await;
    }

    /// [`Self::finish`] for a test whose scenario is a call the policy
    /// denies (as AWS would): only the denials `expected` names may happen.
    pub async fn finish_denying(self, expected: impl Fn(&prism_cloud::proxy::Denial) -> bool) {
        let dir = self.stop_denying(expected).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// [`Self::finish`], keeping the state (and logs) for the caller to read
    /// and remove.
    pub async fn stop_keeping_state(self) -> PathBuf {
        self.stop_denying(|_| false).await
    }

    async fn stop_denying(self, expected: impl Fn(&prism_cloud::proxy::Denial) -> bool) -> PathBuf {
        let denials: Vec<_> = self.cloud.proxies.denials().into_iter().filter(|d| !expected(d)).collect();
        assert!(self.revokes || denials.is_empty(), "calls template.yaml does not allow: {denials:#?}");
        let dir = self.state_dir.clone();
        self.cloud.stop().await;
        dir
    }
}

fn token(key: &TokenKey, owner: &str) -> String {
    key.issue(owner, chrono::Duration::hours(1), chrono::Utc::now()).expect("token")
}

fn client(url: &str, token: Option<String>) -> PrismClient {
    PrismClient::new(url, token).expect("client")
}

/// Encodes `dir/name` with ffmpeg from `args` (inputs and codec options).
pub fn ffmpeg(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = std::process::Command::new("ffmpeg").args(["-hide_banner", "-v", "error", "-y"]).args(args).arg(&out).status();
    assert!(status.expect("ffmpeg runs").success(), "encoding {name}");
    out
}

fn uuid_like() -> String {
    prism_shared::JobId::new_random().to_string()
}
