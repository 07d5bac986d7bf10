//! `ferry dev`'s one-time dashboard sign-in link (issue 20): a real
//! `ferry dev` process prints it; its one visit signs in (the usual session
//! cookie, then the overview), a second visit and a wrong code are refused,
//! and `ferry api`'s router has no such route.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::worker_process::WorkerProcesses;
use ferry_tests::{Parts, RedisServer, TestFerry};
use reqwest::header;
use reqwest::redirect::Policy;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `ferry dev` on `redis` and returns it with the link it printed.
fn ferry_dev(redis: &RedisServer, spool: &std::path::Path) -> (WorkerProcesses, String) {
    let mut child = Command::new(ferry_tests::ferry_binary())
        .arg("dev")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis.url())
        .env("FERRY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("FERRY_SPOOL_DIR", spool)
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the ferry binary is built before the tests (scripts/test)");
    let stdout = child.stdout.take().unwrap();
    let process = WorkerProcesses::new(vec![child]);
    // Read to the end on a thread of its own: a closed pipe would fail
    // `ferry dev`'s later prints.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(link) = line.strip_prefix("dashboard: ") {
                let _ = tx.send(link.to_owned());
            }
        }
    });
    let link = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ferry dev prints the dashboard's link");
    (process, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_link_signs_in_once_and_only_in_ferry_dev() {
    let redis = RedisServer::start();
    let spool = tempfile::tempdir().unwrap();
    let (_dev, link) = ferry_dev(&redis, spool.path());
    assert!(link.contains("/admin/dev-sign-in?code="), "{link}");
    let base = link.split("/admin").next().unwrap().to_owned();

    // The api is up once the link is printed, give or take its bind.
    let mut first = None;
    for _ in 0..100 {
        match client().get(&link).send().await {
            Ok(r) => {
                first = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let first = first.expect("ferry dev answers");
    assert_eq!(first.status().as_u16(), 303);
    assert_eq!(first.headers()[header::LOCATION], "/admin");
    let set_cookie = first.headers()[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["ferry_admin=", "HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let overview = client()
        .get(format!("{base}/admin"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status().as_u16(), 200);
    let page = overview.text().await.unwrap();
    assert!(page.contains("Overview") && page.contains(r#"name="csrf""#));

    let again = client().get(&link).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 403);
    assert!(again.headers().get(header::SET_COOKIE).is_none());
    assert!(again.text().await.unwrap().contains("already used"));
    let wrong = client()
        .get(format!("{base}/admin/dev-sign-in?code=guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 403);
    assert!(wrong.text().await.unwrap().contains("not valid"));

    // `ferry api`'s router (the same state builder, without the code).
    let api = TestFerry::start(
        &redis,
        &[],
        Parts {
            api: true,
            worker: false,
        },
    )
    .await;
    let code = link.split("code=").nth(1).unwrap();
    let refused = client()
        .get(format!("{}/admin/dev-sign-in?code={code}", api.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 404);
    api.stop().await;
}
