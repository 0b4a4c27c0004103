//! Admin sessions with more than one reporting-api: a login through one replica is
//! accepted by another, a logout through either ends it on both, a session outlives a
//! restart, and failed logins meet 429 with Retry-After. Also secrets given as
//! `TRAFFSURE__X_FILE` files, which never show up in a log or in /metrics.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use traffsure_tests::{
    Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME, API_KEY, CLICK_HASH_KEYS,
    SESSION_SIGNING_KEY,
};

const A: &str = "reporting-api";
const B: &str = "reporting-api#2";

/// A browser's session: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn login(
    stack: &Stack,
    instance: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<reqwest::Response> {
    Ok(stack
        .http
        .post(stack.url(instance, "/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?)
}

async fn log_in(stack: &Stack, instance: &str) -> anyhow::Result<Session> {
    let response = login(stack, instance, ADMIN_USERNAME, ADMIN_PASSWORD).await?;
    anyhow::ensure!(
        response.status() == 200,
        "login answered {}",
        response.status()
    );
    let cookie = response.headers()["set-cookie"].to_str()?;
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    let csrf = response.json::<Value>().await?["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Session { cookie, csrf })
}

/// The status of GET /api/v1/auth/session at `instance` with the session's cookie alone.
async fn session_status(
    stack: &Stack,
    instance: &str,
    session: &Session,
) -> anyhow::Result<StatusCode> {
    Ok(stack
        .http
        .get(stack.url(instance, "/api/v1/dashboard"))
        .header("cookie", &session.cookie)
        .send()
        .await?
        .status())
}

/// reporting-api alone, as two replicas sharing the signing key.
fn two_replicas() -> StackOptions {
    StackOptions::default()
        .services(&["reporting-api"])
        .instances("reporting-api", 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_on_every_replica_survives_a_restart_and_logout_ends_it_everywhere(
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(two_replicas()).await?;
    let result = async {
        let session = log_in(&stack, A).await?;
        assert_eq!(session_status(&stack, A, &session).await?, 200);
        assert_eq!(
            session_status(&stack, B, &session).await?,
            200,
            "replica B accepts A's session"
        );
        let view: Value = stack
            .http
            .get(stack.url(B, "/api/v1/auth/session"))
            .header("cookie", &session.cookie)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(view["username"], ADMIN_USERNAME);
        assert_eq!(
            view["csrf_token"],
            session.csrf.as_str(),
            "B derives the same CSRF token"
        );

        // A write through B needs the CSRF token A handed out.
        let no_token = stack
            .http
            .post(stack.url(B, "/api/v1/auth/logout"))
            .header("cookie", &session.cookie)
            .send()
            .await?;
        assert_eq!(no_token.status(), 403);
        let logout = stack
            .http
            .post(stack.url(B, "/api/v1/auth/logout"))
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .send()
            .await?;
        assert_eq!(logout.status(), 200);
        assert_eq!(session_status(&stack, B, &session).await?, 401);
        assert_eq!(
            session_status(&stack, A, &session).await?,
            401,
            "A refuses the session B ended"
        );
        let revoked = stack
            .clickhouse("SELECT count() FROM admin_session_revocations")
            .await?;
        assert_eq!(revoked, "1");

        // A fresh session outlives a restart of the replica that opened it.
        let session = log_in(&stack, A).await?;
        stack.restart(A).await?;
        assert_eq!(
            session_status(&stack, A, &session).await?,
            200,
            "the session survives a restart"
        );
        assert_eq!(session_status(&stack, B, &session).await?, 200);
        // A cookie changed by the browser is nobody's session.
        let forged = Session {
            cookie: session.cookie.replace("ts_session=", "ts_session=0"),
            csrf: session.csrf.clone(),
        };
        assert_eq!(session_status(&stack, A, &forged).await?, 401);
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_meet_429_per_user_and_per_address() -> anyhow::Result<()> {
    let stack = Stack::start_with(
        two_replicas()
            .env(
                "reporting-api",
                "TRAFFSURE__LOGIN__MAX_FAILURES_PER_USER",
                "3",
            )
            .env(
                "reporting-api",
                "TRAFFSURE__LOGIN__MAX_FAILURES_PER_ADDRESS",
                "5",
            )
            .env("reporting-api", "TRAFFSURE__LOGIN__WINDOW_SECONDS", "600"),
    )
    .await?;
    let result = async {
        // Three wrong passwords for admin: the fourth attempt is refused, even with the
        // right password, before the password is checked.
        for attempt in 1..=3 {
            let wrong = login(&stack, A, ADMIN_USERNAME, "guess").await?;
            assert_eq!(wrong.status(), 401, "attempt {attempt}");
        }
        let limited = login(&stack, A, ADMIN_USERNAME, ADMIN_PASSWORD).await?;
        assert_eq!(limited.status(), 429);
        let retry_after: u64 = limited.headers()["retry-after"].to_str()?.parse()?;
        assert!(
            (590..=600).contains(&retry_after),
            "Retry-After: {retry_after}"
        );
        let body: Value = limited.json().await?;
        assert_eq!(body["code"], "too_many_requests");
        assert_eq!(body["status"], 429);

        // The address has 3 failures: two more for another user, then every user is refused.
        for attempt in 4..=5 {
            let wrong = login(&stack, A, "someone", "guess").await?;
            assert_eq!(wrong.status(), 401, "attempt {attempt}");
        }
        let limited = login(&stack, A, "nobody-yet", "guess").await?;
        assert_eq!(limited.status(), 429);

        // The limit is per replica: B has seen no failure, so an attacker gets the limit
        // once per replica (documented bound), and the admin can still log in there.
        let on_b = login(&stack, B, ADMIN_USERNAME, ADMIN_PASSWORD).await?;
        assert_eq!(on_b.status(), 200);
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_files_work_and_never_show_in_logs_or_metrics() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "traffsure-secrets-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let file = |name: &str, content: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        // As `echo secret > file` writes it: with a trailing newline.
        std::fs::write(&path, format!("{content}\n"))?;
        Ok(path.display().to_string())
    };
    let admin_password = "file-admin-password-7f3a9c";
    let options = StackOptions::default()
        .services(&["click-ingest", "reporting-api"])
        .env_remove("*", "TRAFFSURE__CLICK_HASH__KEYS")
        .env_remove("reporting-api", "TRAFFSURE__ADMIN__PASSWORD")
        .env_remove("reporting-api", "TRAFFSURE__API_KEYS")
        .env_remove("reporting-api", "TRAFFSURE__SESSION__SIGNING_KEY")
        .env(
            "click-ingest",
            "TRAFFSURE__CLICK_HASH__KEYS_FILE",
            file("keys", CLICK_HASH_KEYS)?,
        )
        .env(
            "reporting-api",
            "TRAFFSURE__ADMIN__PASSWORD_FILE",
            file("password", admin_password)?,
        )
        .env(
            "reporting-api",
            "TRAFFSURE__API_KEYS_FILE",
            file("api-keys", API_KEY)?,
        )
        .env(
            "reporting-api",
            "TRAFFSURE__SESSION__SIGNING_KEY_FILE",
            file("signing-key", SESSION_SIGNING_KEY)?,
        );
    let stack = Stack::start_with(options).await?;
    let result = async {
        // The values from the files are the settings, less their trailing newline.
        let ok = login(&stack, A, ADMIN_USERNAME, admin_password).await?;
        assert_eq!(ok.status(), 200);
        let dashboard = stack.api(Method::GET, "/api/v1/dashboard").send().await?;
        assert_eq!(
            dashboard.status(),
            200,
            "the API key from its file is accepted"
        );
        let slug = format!("secrets-{}", stack.id);
        stack
            .create_flow(json!({
                "name": "Secret files",
                "slug": slug,
                "destination_url": "https://example.com/lp"
            }))
            .await?;
        let track = stack.url("click-ingest", &format!("/c/{slug}"));
        let click = traffsure_tests::eventually(Duration::from_secs(30), || async {
            let response = stack.http.get(&track).send().await?;
            Ok((response.status() == 302).then_some(response))
        })
        .await?;
        let location = click.headers()["location"].to_str()?;
        assert!(location.starts_with("https://example.com/lp"), "{location}");

        let secrets = [
            CLICK_HASH_KEYS
                .split_once(':')
                .map(|(_, s)| s)
                .unwrap_or_default(),
            admin_password,
            API_KEY,
            SESSION_SIGNING_KEY,
        ];
        for service in ["click-ingest", "reporting-api"] {
            let metrics = stack.metrics_text(service).await?;
            let log = std::fs::read_to_string(&stack.services[service].log)?;
            assert!(log.contains("listening"), "{service} log: {log}");
            for secret in secrets {
                assert!(
                    !metrics.contains(secret),
                    "{service} /metrics shows a secret"
                );
                assert!(!log.contains(secret), "{service} log shows a secret");
            }
        }
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    std::fs::remove_dir_all(&dir)?;
    result
}

#[tokio::test]
async fn a_setting_and_its_file_together_stop_the_service_naming_the_variable() -> anyhow::Result<()>
{
    let binary = traffsure_tests::bin_dir().join("reporting-api");
    let output = tokio::process::Command::new(&binary)
        .env("TRAFFSURE__ADMIN__PASSWORD", "from-the-environment")
        .env("TRAFFSURE__ADMIN__PASSWORD_FILE", "/nonexistent/password")
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TRAFFSURE__ADMIN__PASSWORD_FILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("from-the-environment"), "{stderr}");

    let output = tokio::process::Command::new(&binary)
        .env("TRAFFSURE__ADMIN__PASSWORD_FILE", "/nonexistent/password")
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/password"), "{stderr}");
    Ok(())
}
