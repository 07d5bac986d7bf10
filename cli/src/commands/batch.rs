//! `ferry batch submit|status|results|cancel`: the batches API over HTTP,
//! as any client would use it (`FERRY_API_URL`, bearer token in
//! `FERRY_API_TOKEN`). `submit --wait` follows the batch with a progress
//! bar until it is final.
//!
//! `submit` prints the batch id alone on stdout (for scripts); messages and
//! the progress bar go to stderr.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_common::config::vars;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// How often `--wait` asks for the batch's counts.
const POLL: Duration = Duration::from_millis(500);

#[derive(clap::Args)]
pub struct Args {
    /// The api's base URL.
    #[arg(long, env = vars::FERRY_API_URL, default_value = "http://127.0.0.1:5000", global = true)]
    url: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Submit a JSONL file: one request per line
    /// (`{"custom_id", "provider"?, "model"?, "messages", "parameters"?}`).
    Submit {
        file: std::path::PathBuf,
        /// Follow the batch with a progress bar until it is final.
        #[arg(long)]
        wait: bool,
        /// Enqueue the valid lines and report the invalid ones, instead of
        /// refusing the whole file.
        #[arg(long)]
        skip_invalid: bool,
        /// POSTed a signed summary when the batch finishes.
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// Status, counts and times of a batch (JSON).
    Status { id: String },
    /// The results as JSONL, one line per custom_id.
    Results {
        id: String,
        /// Write them here instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Cancel a batch: queued requests will not run, running ones finish.
    Cancel { id: String },
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let token = std::env::var(vars::FERRY_API_TOKEN).map_err(|_| {
        anyhow::anyhow!(
            "{}: set it to a token with the submit and read scopes (`ferry tokens new`)",
            vars::FERRY_API_TOKEN
        )
    })?;
    let api = Api {
        base: args.url.trim_end_matches('/').to_owned(),
        token,
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?,
    };
    match args.action {
        Action::Submit {
            file,
            wait,
            skip_invalid,
            webhook_url,
        } => {
            let id = api.submit(&file, skip_invalid, webhook_url).await?;
            println!("{id}");
            if wait {
                api.follow(&id).await?;
            }
            Ok(())
        }
        Action::Status { id } => {
            let batch = api.get(&format!("/v1/batches/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&batch)?);
            Ok(())
        }
        Action::Results { id, output } => api.results(&id, output).await,
        Action::Cancel { id } => {
            let batch = api
                .send(api.post(&format!("/v1/batches/{id}/cancel")))
                .await?;
            eprintln!("batch {id}: {}", batch["status"].as_str().unwrap_or("?"));
            Ok(())
        }
    }
}

impl Api {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token),
        )
        .await
    }

    /// Sends and reads a JSON answer; an error answer becomes one message
    /// (with the bad lines of a refused batch).
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the api at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        let mut message = format!(
            "{} ({}): {}",
            status.as_u16(),
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or("no details")
        );
        for line in error["lines"].as_array().into_iter().flatten() {
            message.push_str(&format!(
                "\n  line {}: {}",
                line["line"],
                line["reason"].as_str().unwrap_or("")
            ));
        }
        bail!(message)
    }

    async fn submit(
        &self,
        file: &std::path::Path,
        skip_invalid: bool,
        webhook_url: Option<String>,
    ) -> anyhow::Result<String> {
        let opened = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        let length = opened.metadata().await?.len();
        // Streamed from disk, never read whole.
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(opened));
        let mut query = vec![("skip_invalid", skip_invalid.to_string())];
        if let Some(url) = webhook_url {
            query.push(("webhook_url", url));
        }
        let created = self
            .send(
                self.post("/v1/batches")
                    .query(&query)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                    .header(reqwest::header::CONTENT_LENGTH, length)
                    .body(body),
            )
            .await?;
        let id = created["id"]
            .as_str()
            .context("no batch id in the answer")?;
        eprintln!(
            "batch {id}: {} requests queued{}",
            created["counts"]["total"],
            match created["skipped"].as_u64() {
                Some(n) if n > 0 => format!(", {n} invalid lines skipped"),
                _ => String::new(),
            }
        );
        for line in created["skipped_lines"].as_array().into_iter().flatten() {
            eprintln!(
                "  skipped line {}: {}",
                line["line"],
                line["reason"].as_str().unwrap_or("")
            );
        }
        Ok(id.to_owned())
    }

    /// Polls the batch until it is final, drawing its progress.
    async fn follow(&self, id: &str) -> anyhow::Result<()> {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta}) {msg}",
            )
            .expect("a valid template"),
        );
        loop {
            let batch = self.get(&format!("/v1/batches/{id}")).await?;
            let counts = &batch["counts"];
            let n = |k: &str| counts[k].as_u64().unwrap_or(0);
            bar.set_length(n("total"));
            bar.set_position(n("succeeded") + n("failed") + n("cancelled"));
            bar.set_message(format!("{} running, {} failed", n("running"), n("failed")));
            let status = batch["status"].as_str().unwrap_or("");
            if matches!(status, "completed" | "cancelled" | "failed") {
                bar.finish_and_clear();
                eprintln!(
                    "batch {id} {status}: {} succeeded, {} failed, {} cancelled",
                    n("succeeded"),
                    n("failed"),
                    n("cancelled")
                );
                if status != "completed" {
                    bail!("batch {id} ended {status}");
                }
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Streams the results to `output` (stdout by default).
    async fn results(&self, id: &str, output: Option<std::path::PathBuf>) -> anyhow::Result<()> {
        let mut response = self
            .http
            .get(format!("{}/v1/batches/{id}/results", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the api at {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "{} ({}): {}",
                status.as_u16(),
                body["error"]["code"].as_str().unwrap_or("error"),
                body["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        let mut out: Box<dyn Write> = match &output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the results were cut short; try again")?
        {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(())
    }
}
