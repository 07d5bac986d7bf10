//! The HTTP client completion webhooks go out on. It is not the providers'
//! client because its destination is the API caller's choice
//! (`ferry_common::batch::webhook_target`): every address a host name
//! resolves to is checked in the client's own resolver, where the
//! connection is made, so a name cannot pass a check and then connect
//! elsewhere; redirects are not followed (a 3xx could point anywhere); and
//! no proxy is taken from the environment (the proxy, not the receiver,
//! would be resolved). TLS is rustls with certificates verified.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use ferry_common::batch::webhook_target::{TargetRefused, WebhookTargets};

/// The client with the targets its resolver admits, kept together so the
/// check of IP-literal hosts (which never reach a resolver) and the
/// resolver's check of names can never disagree.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    targets: WebhookTargets,
}

impl WebhookClient {
    pub fn new(targets: WebhookTargets) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .dns_resolver(Arc::new(GuardedResolver {
                targets: targets.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, targets })
    }

    /// A POST to `url`; refused at once when its host is an IP address
    /// outside the targets (a host name is checked as it is resolved, and a
    /// refusal there is found in the send error by [`refusal`]).
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, TargetRefused> {
        if let Ok(parsed) = url::Url::parse(url) {
            self.targets.check_literal(&parsed)?;
        }
        Ok(self.http.post(url))
    }
}

/// The refusal inside a failed request, if the resolver refused its host.
pub fn refusal(error: &reqwest::Error) -> Option<&TargetRefused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<TargetRefused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

/// The system resolver, keeping only the addresses webhooks may reach.
struct GuardedResolver {
    targets: WebhookTargets,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.targets.clone();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let mut refused = None;
            let permitted: Vec<SocketAddr> = resolved
                .filter(|addr| match targets.check(addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                return Err(match refused {
                    Some(refused) => refused.into(),
                    None => "the webhook's host name resolves to no address".into(),
                });
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}
