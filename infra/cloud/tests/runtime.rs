//! The local Lambda runtime against a runtime written in shell: responses,
//! function errors, crashes (restarted), timeouts and memory overruns
//! (killed, restarted).

use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_cloud::provision::FunctionSpec;
use prism_cloud::runtime::{InvokeError, RuntimeEnv, cold_start, start_function};
use tokio_util::sync::CancellationToken;

mod common;
use common::{env_for, runtime_dir, spec};

/// A Lambda runtime client in bash and curl: echoes its event, or does what the event says.
const SHELL_RUNTIME: &str = r#"#!/usr/bin/env bash
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while true; do
  headers=$(mktemp)
  body=$(curl -sS -D "$headers" "$api/invocation/next")
  id=$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | cut -d' ' -f2 | tr -d '\r')
  rm -f "$headers"
  case "$body" in
    '"crash"') exit 3 ;;
    '"hang"') sleep 30 ;;
    '"slow"') sleep 1; curl -sS -X POST -d '"slow done"' "$api/invocation/$id/response" >/dev/null ;;
    # A child process holding 200 MB: it counts against the function's memory.
    '"hog"') python3 -c 'import time; b = bytearray(200 << 20); time.sleep(30)' ;;
    # Busy for 2 s of wall time, then answers with the CPU time it got.
    '"spin"') end=$((SECONDS + 2)); while [ $SECONDS -lt $end ]; do :; done
      # `times` in this shell, not a subshell: a pipe would time the subshell.
      times > "$headers.cpu"; cpu=$(head -1 "$headers.cpu"); rm -f "$headers.cpu"
      curl -sS -X POST -d "\"$cpu\"" "$api/invocation/$id/response" >/dev/null ;;
    '"fail"') curl -sS -X POST -d '{"errorType":"Boom","errorMessage":"asked to fail"}' "$api/invocation/$id/error" >/dev/null ;;
    *) curl -sS -X POST -d "$body" "$api/invocation/$id/response" >/dev/null ;;
  esac
done
"#;

/// A runtime that registers an extension during its init, as
/// `lambda_runtime`'s graceful shutdown does, and writes a line on SIGTERM.
/// Each wait runs in the background so bash runs its trap at once.
const GRACEFUL_RUNTIME: &str = r#"#!/usr/bin/env bash
base="http://$AWS_LAMBDA_RUNTIME_API"
curl -sS -X POST -H 'Lambda-Extension-Name: graceful' -d '{"events":[]}' "$base/2020-01-01/extension/register" >/dev/null
trap 'echo "shutdown hook ran"; kill $(jobs -p) 2>/dev/null; exit 0' TERM
api="$base/2018-06-01/runtime"
while true; do
  headers=$(mktemp)
  curl -sS -D "$headers" -o "$headers.body" "$api/invocation/next" & wait $!
  id=$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | cut -d' ' -f2 | tr -d '\r')
  body=$(cat "$headers.body"); rm -f "$headers" "$headers.body"
  case "$body" in
    '"slow"') sleep 1 & wait $!; curl -sS -X POST -d '"slow done"' "$api/invocation/$id/response" >/dev/null ;;
    *) curl -sS -X POST -d "$body" "$api/invocation/$id/response" >/dev/null ;;
  esac
done
"#;

/// A runtime that reports its init failed, then exits, as `lambda_runtime`
/// does when the handler's set-up returns an error.
const FAILING_INIT: &str = r#"#!/usr/bin/env bash
curl -sS -X POST -d '{"errorType":"Runtime.InitError","errorMessage":"TABLE_NAME is not set"}' \
  "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/init/error" >/dev/null
exit 1
"#;

/// A runtime that dies before it asks for work, saying nothing.
const DYING_AT_START: &str = "#!/usr/bin/env bash\nexit 7\n";
/// A runtime that registers an extension, as Prism's do, then asks for work.
const REGISTERING: &str = r#"#!/usr/bin/env bash
curl -sS -X POST -H 'Lambda-Extension-Name: helper' -d '{"events":[]}' "http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension/register" >/dev/null
curl -sS "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation/next"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_failure_fails_the_waiting_invocations_instead_of_leaving_them_waiting() {
    let shutdown = CancellationToken::new();
    for (name, script, expected) in [
        ("failing-init", FAILING_INIT, ("Runtime.InitError", "TABLE_NAME is not set")),
        ("dying-at-start", DYING_AT_START, ("Runtime.ExitError", "Runtime exited with error: exit status: 7")),
    ] {
        let dir = runtime_dir(name, script);
        let f = start_function(spec(name), &env_for(&dir, &shutdown)).await.expect("start");
        for attempt in 0..2 {
            let answer = tokio::time::timeout(Duration::from_secs(20), f.invoke(Bytes::from_static(b"{}"))).await;
            let answer = answer.unwrap_or_else(|_| panic!("{name}: invocation {attempt} still waiting"));
            let (error_type, message) = expected;
            assert_eq!(answer, Err(InvokeError::Function { error_type: error_type.into(), message: message.into() }), "{name}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_are_restarted_and_overruns_killed() {
    let dir = runtime_dir("echo-runtime", SHELL_RUNTIME);
    let shutdown = CancellationToken::new();
    // A deadline that a loaded machine's Python still allocates the hog's 200 MB within.
    let deadline = Duration::from_secs(3);
    let f = start_function(FunctionSpec { timeout: deadline, ..spec("echo-runtime") }, &env_for(&dir, &shutdown)).await.expect("start");
    let invoke = |body: &'static str| f.invoke(Bytes::from_static(body.as_bytes()));

    assert_eq!(invoke("\"hello\"").await, Ok(Bytes::from_static(b"\"hello\"")));
    assert_eq!(invoke("\"fail\"").await, Err(InvokeError::Function { error_type: "Boom".into(), message: "asked to fail".into() }));

    assert_eq!(invoke("\"crash\"").await, Err(InvokeError::Crashed));
    assert_eq!(invoke("\"after crash\"").await, Ok(Bytes::from_static(b"\"after crash\"")), "the instance was restarted");

    let started = Instant::now();
    assert_eq!(invoke("\"hang\"").await, Err(InvokeError::Timeout(deadline)));
    assert!(started.elapsed() < Duration::from_secs(10), "killed at its deadline, not when it finished (30 s)");
    assert_eq!(invoke("\"after hang\"").await, Ok(Bytes::from_static(b"\"after hang\"")));

    let started = Instant::now();
    match invoke("\"hog\"").await {
        Err(InvokeError::OutOfMemory { limit_mb: 128, used_mb }) => assert!((128..400).contains(&used_mb), "{used_mb} MB"),
        other => panic!("not stopped for its memory: {other:?}"),
    }
    assert!(started.elapsed() < deadline, "killed as it passed its memory, not at its deadline");
    assert_eq!(invoke("\"after hog\"").await, Ok(Bytes::from_static(b"\"after hog\"")));

    // Every invocation ended with Lambda's REPORT line; the hog's shows its memory.
    let log = std::fs::read_to_string(dir.join("logs").join("echo-runtime.log")).expect("log");
    let reports: Vec<&str> = log.lines().filter(|l| l.contains("REPORT RequestId: ")).collect();
    assert_eq!(reports.len(), 8, "{log}");
    assert!(reports.iter().all(|r| r.contains("Memory Size: 128 MB")), "{reports:?}");
    let most = |r: &str| r.split("Max Memory Used: ").nth(1).and_then(|m| m.split(' ').next()?.parse::<u64>().ok());
    assert!(reports.iter().filter_map(|r| most(r)).any(|mb| mb >= 128), "{reports:?}");
    // As on Lambda, the first invocation of each process (four were started:
    // at first, after the crash, the hang and the hog) reports its init.
    let inits = reports.iter().filter(|r| r.contains("\tInit Duration: ")).count();
    assert_eq!(inits, 4, "{reports:?}");
    assert!(reports[0].contains("\tInit Duration: ") && !reports[1].contains("Init Duration"), "{reports:?}");

    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_concurrency_a_gateway_is_throttled_while_an_event_source_waits_its_turn() {
    let dir = runtime_dir("throttled-runtime", SHELL_RUNTIME);
    let shutdown = CancellationToken::new();
    let f = start_function(spec("throttled-runtime"), &env_for(&dir, &shutdown)).await.expect("start");
    assert_eq!(f.invoke_unqueued(Bytes::from_static(b"\"free\"")).await, Ok(Bytes::from_static(b"\"free\"")));

    // The one instance hangs until its 1 s timeout; a poller's invocation queues behind it.
    let (hung, queued) = (f.clone(), f.clone());
    let hang = tokio::spawn(async move { hung.invoke(Bytes::from_static(b"\"hang\"")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waits = tokio::spawn(async move { queued.invoke(Bytes::from_static(b"\"queued\"")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(f.invoke_unqueued(Bytes::from_static(b"\"gateway\"")).await, Err(InvokeError::Throttled { limit: 1 }));
    assert!(started.elapsed() < Duration::from_millis(100), "refused at once, not queued");

    assert_eq!(hang.await.expect("join"), Err(InvokeError::Timeout(Duration::from_secs(1))));
    assert_eq!(waits.await.expect("join"), Ok(Bytes::from_static(b"\"queued\"")), "the queued one ran once the instance was free");
    assert_eq!(f.invoke_unqueued(Bytes::from_static(b"\"again\"")).await, Ok(Bytes::from_static(b"\"again\"")), "free again");
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_is_timed_to_the_first_request_for_work_and_a_runtime_dying_first_is_an_error() {
    let shutdown = CancellationToken::new();
    let dir = runtime_dir("cold-echo", SHELL_RUNTIME);
    let env = env_for(&dir, &shutdown);
    let took = cold_start(&dir.join("cold-echo"), &spec("cold-echo"), &env).await.expect("timed");
    assert!(took.ready > Duration::ZERO && took.ready < Duration::from_secs(10), "{took:?}");
    assert_eq!(took.extension_registered, None, "this runtime registers no extension");

    let registering = runtime_dir("cold-registering", REGISTERING);
    let took = cold_start(&registering.join("cold-registering"), &spec("cold-registering"), &env).await.expect("timed");
    let registered = took.extension_registered.expect("the registration was seen");
    assert!(registered > Duration::ZERO && registered < took.ready, "{took:?}");

    let dying = runtime_dir("cold-dying", DYING_AT_START);
    let error = cold_start(&dying.join("cold-dying"), &spec("cold-dying"), &env).await.expect_err("it never asked for work");
    assert!(error.to_string().contains("exited before asking for work"), "{error}");
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dying);
    let _ = std::fs::remove_dir_all(registering);
}

/// Seconds from a `times` line: "0m1.990s 0m0.010s" (user, system).
fn cpu_seconds(line: &str) -> f64 {
    line.trim_matches('"')
        .split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m').expect("NmN.NNNs");
            m.parse::<f64>().expect("minutes") * 60.0 + s.parse::<f64>().expect("seconds")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_gets_the_cpu_share_its_memory_size_buys_on_lambda() {
    let dir = runtime_dir("spin-runtime", SHELL_RUNTIME);
    let shutdown = CancellationToken::new();
    let spin = |cpu: Option<std::sync::Arc<prism_cloud::cpu::CpuGroups>>| {
        let (dir, shutdown) = (dir.clone(), shutdown.clone());
        async move {
            // 177 MB buys a tenth of a vCPU on Lambda.
            let spec = FunctionSpec { memory_mb: 177, timeout: Duration::from_secs(10), ..spec("spin-runtime") };
            let f = start_function(spec, &RuntimeEnv { cpu, ..env_for(&dir, &shutdown) }).await.expect("start");
            let answer = f.invoke(Bytes::from_static(b"\"spin\"")).await.expect("spun");
            cpu_seconds(&String::from_utf8_lossy(&answer))
        }
    };
    let groups = std::sync::Arc::new(prism_cloud::cpu::CpuGroups::create().expect("root and the cgroup v1 cpu controller"));
    let limited = spin(Some(groups.clone())).await;
    let unlimited = spin(None).await;
    assert!(limited < 0.4, "a tenth of a CPU for 2 s, yet {limited:.2} s of CPU");
    assert!(unlimited > 2.0 * limited, "unlimited {unlimited:.2} s against limited {limited:.2} s");
    shutdown.cancel();
    drop(groups);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_instance_finishes_its_invocation_refuses_more_and_gets_sigterm_if_it_registered_an_extension() {
    for (name, script, sigterm) in [("graceful-runtime", GRACEFUL_RUNTIME, true), ("plain-runtime", SHELL_RUNTIME, false)] {
        let dir = runtime_dir(name, script);
        let shutdown = CancellationToken::new();
        let env = env_for(&dir, &shutdown);
        let spec = FunctionSpec { timeout: Duration::from_secs(10), concurrency: 2, ..spec(name) };
        let f = start_function(spec, &env).await.expect("start");
        assert_eq!(f.invoke(Bytes::from_static(b"\"warm\"")).await, Ok(Bytes::from_static(b"\"warm\"")), "{name}");

        // One instance is 1 s into nothing when the stop comes; the other is idle.
        let running = f.clone();
        let slow = tokio::spawn(async move { running.invoke(Bytes::from_static(b"\"slow\"")).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stopping = Instant::now();
        shutdown.cancel();
        assert_eq!(f.invoke(Bytes::from_static(b"\"late\"")).await, Err(InvokeError::ShuttingDown), "{name}: no work after the stop");
        env.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), env.tasks.wait()).await.expect("every instance stopped");
        let stopped = stopping.elapsed();

        let slow = slow.await.expect("join");
        assert_eq!(slow, Ok(Bytes::from_static(b"\"slow done\"")), "{name}: the invocation in flight finished");
        assert!(stopped >= Duration::from_millis(500), "{name}: the stop waited for it ({stopped:?})");
        let log = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).expect("log");
        let hooks = log.lines().filter(|l| l.contains("shutdown hook ran")).count();
        let stopped_by_signal = log.lines().filter(|l| l.contains("[prism] instance stopped after SIGTERM")).count();
        if sigterm {
            assert_eq!((hooks, stopped_by_signal), (2, 2), "{name}: both instances ran their hook and exited\n{log}");
        } else {
            assert_eq!((hooks, stopped_by_signal), (0, 0), "{name}: no extension, no SIGTERM (as on Lambda)\n{log}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_while_they_wait_for_work_are_started_again_and_take_the_next_invocation() {
    let dir = runtime_dir("killed-runtime", SHELL_RUNTIME);
    let shutdown = CancellationToken::new();
    let f = start_function(FunctionSpec { concurrency: 2, ..spec("killed-runtime") }, &env_for(&dir, &shutdown)).await.expect("start");
    assert_eq!(f.invoke(Bytes::from_static(b"\"before\"")).await, Ok(Bytes::from_static(b"\"before\"")));
    // Both wait in `next`, one of them holding the queue, when they die.
    assert_eq!(f.kill_instances(), 2);
    // Time to be seen dead and started again (a restart waits 100 ms).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = tokio::time::timeout(Duration::from_secs(10), f.invoke(Bytes::from_static(b"\"after\""))).await;
    assert_eq!(after.expect("answered, not left with a dead process's request"), Ok(Bytes::from_static(b"\"after\"")));
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_mid_invocation_fail_it_as_crashed_and_take_the_next_invocation() {
    let dir = runtime_dir("killed-busy-runtime", SHELL_RUNTIME);
    let shutdown = CancellationToken::new();
    let f = start_function(FunctionSpec { concurrency: 2, ..spec("killed-busy-runtime") }, &env_for(&dir, &shutdown)).await.expect("start");
    let running = f.clone();
    let slow = tokio::spawn(async move { running.invoke(Bytes::from_static(b"\"slow\"")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One runs the slow invocation, the other waits in `next`, when both die.
    assert_eq!(f.kill_instances(), 2);
    assert_eq!(slow.await.expect("join"), Err(InvokeError::Crashed));
    // Time for the other death to be seen too and both to start again: until
    // its exit is reaped, a dead process's `next` can still be handed work,
    // which then fails as crashed, as on a host that has just died.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for attempt in ["\"after\"", "\"again\""] {
        let after = tokio::time::timeout(Duration::from_secs(10), f.invoke(Bytes::from(attempt))).await;
        assert_eq!(after.expect("answered, not left with a dead process's request"), Ok(Bytes::from(attempt)));
    }
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}
