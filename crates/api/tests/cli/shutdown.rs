//! SIGTERM under load: the binary stops accepting, lets the requests it took finish, and exits cleanly. Every answer
//! is a success (a request cut off or refused gets none), and every write it acknowledged is stored, as the same
//! binary, started again on the same database, shows.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinSet;

use crate::tasks_api;

const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_answers_only_201_and_loses_no_acknowledged_write() {
    let directory = std::env::temp_dir().join(format!("tasks-sigterm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).expect("a directory for the test");
    let database = format!("sqlite://{}?mode=rwc", directory.join("tasks.db").display());

    let (mut server, address) = serve(&directory, &database).await;
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::new();
    let mut clients = JoinSet::new();
    for client in 0..CLIENTS {
        let (http, address, stop) = (http.clone(), address.clone(), Arc::clone(&stop));
        clients.spawn(async move { write_until_refused(&http, &address, client, &stop).await });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = server.id().expect("the server is running").to_string();
    let signalled = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(signalled.success());
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("the server exits within its shutdown time-out")
        .expect("the server's exit status");
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = Vec::new();
    let mut refused_answers = Vec::new();
    while let Some(outcome) = clients.join_next().await {
        let (ids, answers) = outcome.expect("a client does not panic");
        acknowledged.extend(ids);
        refused_answers.extend(answers);
    }
    assert!(status.success(), "exit status {status}");
    assert!(
        refused_answers.is_empty(),
        "answers other than 201: {refused_answers:?}"
    );
    assert!(
        acknowledged.len() >= CLIENTS,
        "the load made progress: {}",
        acknowledged.len()
    );

    let (mut again, address) = serve(&directory, &database).await;
    let mut missing = Vec::new();
    for (id, name) in &acknowledged {
        let response = http
            .get(format!("{address}/tasks/{id}"))
            .send()
            .await
            .expect("GET is answered");
        let stored: Option<Value> = if response.status() == 200 {
            response.json().await.ok()
        } else {
            None
        };
        if stored.as_ref().and_then(|task| task["name"].as_str()) != Some(name.as_str()) {
            missing.push(id.clone());
        }
    }
    let _ = again.kill().await;
    let _ = std::fs::remove_dir_all(&directory);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing",
        missing.len(),
        acknowledged.len()
    );
}

/// Starts `tasks-api` on a free port over `database` and returns it with its base URL, read from its log.
async fn serve(home: &Path, database: &str) -> (Child, String) {
    let mut server = tasks_api(home)
        .env("APP__DATABASE__URL", database)
        .env("APP__SERVER__PORT", "0")
        .env("APP__SERVER__WORKERS", "2")
        .env("APP__LOG__LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("tasks-api starts");
    let mut lines = BufReader::new(server.stdout.take().expect("piped stdout")).lines();
    let port = loop {
        let line = lines
            .next_line()
            .await
            .expect("the server's log")
            .expect("the server logs where it listens before anything else ends its log");
        if line.contains("listening")
            && let Some(port) = line.split_whitespace().find_map(|field| field.strip_prefix("port="))
        {
            break port.to_owned();
        }
    };
    // Keep reading, so that the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (server, format!("http://127.0.0.1:{port}"))
}

/// Creates tasks until the server stops answering. Returns the tasks acknowledged (id, name) and every answer that
/// was not 201; a connection the stopping server refused or closed before taking the request is not an answer.
async fn write_until_refused(
    http: &reqwest::Client,
    address: &str,
    client: usize,
    stop: &AtomicBool,
) -> (Vec<(String, String)>, Vec<String>) {
    let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
    for round in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("sigterm {client}-{round}");
        match http
            .post(format!("{address}/tasks"))
            .json(&json!({ "name": name }))
            .send()
            .await
        {
            Ok(response) if response.status() == 201 => {
                let task: Value = response.json().await.expect("a created task");
                acknowledged.push((task["id"].as_str().expect("an id").to_owned(), name));
            }
            Ok(response) => refused.push(format!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            )),
            Err(_) => break,
        }
    }
    (acknowledged, refused)
}
