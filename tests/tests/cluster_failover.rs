//! A Redis Cluster primary killed -9 while WeChat pushes flow and jobs run,
//! with `FERRY_DURABLE_ACK=replica`: after its replica takes over, every push
//! the api acknowledged to WeChat is answered, and none twice.
//!
//! The step this guards: Redis replication is asynchronous, so a push the
//! old primary took but had not yet passed on vanishes with it. The api
//! answers WeChat only once a replica has the push (or once the push is in
//! its local spool), so what WeChat was told was taken survives the kill.
//! Meanwhile the workers follow the new topology and hold their notes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::wechat;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::ferry::{TEST_WECHAT_TOKEN, post_signed};
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker};
use ferry_tests::{Backend, FakeWeChat, Parts, TestFerry, eventually};

const APP_ID: &str = "wx_failover";
const APP_SECRET: &str = "failover-secret";
const KEY: &str = "sk-failover";
const MODEL: &str = "deepseek-chat";
/// Pushes sent in all, before, during and after the failover.
const PUSHES: i64 = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_traffic_loses_no_acknowledged_push_and_answers_none_twice() {
    let began = std::time::Instant::now();
    let mut backend = Backend::cluster();
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, KEY, MODEL).await;
    // Each answer takes a moment: jobs are with the provider at the kill.
    provider.set_default(Some(Reply::echo().stall(Duration::from_millis(300))));
    let base = provider.base_url();
    let provider_env = [
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", base.as_str()),
        ("FERRY_TYPING_INDICATOR", "false"),
    ];
    let api = TestFerry::start(
        &backend,
        &[("FERRY_DURABLE_ACK", "replica")],
        Parts {
            api: true,
            worker: false,
        },
    )
    .await;
    let _fleet = WorkerProcesses::new(
        (0..2)
            .map(|_| ferry_worker(&backend, &wechat, APP_ID, APP_SECRET, &provider_env))
            .collect(),
    );

    // Pushes flow for the whole test: one user per message, so each user
    // must get exactly one reply.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(0usize));
    // Four senders, as WeChat pushes for many users at once.
    let pushing: Vec<_> = (0..4)
        .map(|sender| {
            let (url, acknowledged, refused) =
                (api.api_url.clone(), acknowledged.clone(), refused.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in (sender..PUSHES).step_by(4) {
                    let user = format!("o_failover_{i}");
                    let xml = wechat::text_message_xml(
                        "gh_failover",
                        &user,
                        chrono::Utc::now().timestamp(),
                        &format!("question {i}"),
                        1_000_000 + i,
                    );
                    if post(&client, &url, &xml).await == 200 {
                        acknowledged.lock().unwrap().push(user);
                    } else {
                        *refused.lock().unwrap() += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        })
        .collect();

    eventually(
        "replies flow before the kill",
        Duration::from_secs(30),
        async || wechat.sent().len() >= 20,
    )
    .await;
    let Backend::Cluster(cluster) = &mut backend else {
        unreachable!("a cluster backend")
    };
    // The primary of the WeChat queue's first partition: it holds work.
    let victim = cluster.primary_for_key("{ferry:wechat}:stream");
    println!("{:?} killing {victim}", began.elapsed());
    cluster.kill(&victim);
    cluster.wait_for_failover();
    println!("{:?} failed over", began.elapsed());
    for sender in pushing {
        sender.await.unwrap();
    }

    println!("{:?} pushes done", began.elapsed());
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(
        *refused.lock().unwrap(),
        0,
        "every push was acknowledged (or spooled)"
    );
    eventually(
        "every acknowledged push is answered",
        Duration::from_secs(90),
        async || acknowledged.iter().all(|u| !wechat.sent_to(u).is_empty()),
    )
    .await;
    println!("{:?} all answered", began.elapsed());
    // Anything sent twice would have arrived by now, with the rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    for sent in wechat.sent() {
        *replies.entry(sent.touser.clone()).or_default() += 1;
    }
    let twice: Vec<_> = replies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "answered twice: {twice:?}");
    assert_eq!(
        replies.len(),
        acknowledged.len(),
        "one reply per acknowledged push"
    );
    backend.assert_no_crossslot();
    api.stop().await;
}

async fn post(client: &reqwest::Client, api: &str, xml: &str) -> u16 {
    post_signed(client, api, xml, TEST_WECHAT_TOKEN)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
