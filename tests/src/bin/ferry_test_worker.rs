//! A worker process for the process-level queue tests (kill -9 and friends):
//! Ferry's real worker runtime with the counting handler. Configured by the
//! same environment variables as `ferry worker`; prints its worker id on the
//! first line of stdout.

use ferry_common::Keys;
use ferry_common::config::Config;
use ferry_common::queue::JobQueue;
use ferry_tests::counting::{COUNT, Counting};
use ferry_worker::handler::Handlers;
use ferry_worker::{Worker, WorkerSettings};
use std::io::Write;

#[tokio::main]
async fn main() {
    let config = Config::from_env().expect("configuration");
    let _guard = ferry_common::telemetry::init(&config.log, "test-worker").expect("logging");
    let keys = Keys::new(&config.prefix).with_partitions(config.queue.partitions.clone());
    let store = ferry_common::store::Store::new(&config.redis, 16, keys).expect("store");
    let queue = JobQueue::new(store.clone(), config.queue.retention);
    let handlers = Handlers::new().register(COUNT, Counting { store });
    let worker = Worker::new(queue, handlers, WorkerSettings::from_config(&config.queue));
    println!("{}", worker.id());
    std::io::stdout().flush().unwrap();
    worker.run(ferry_cli::signals::shutdown_token()).await;
}
