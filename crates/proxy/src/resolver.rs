//! DNS resolution that refuses non-public addresses (the SSRF guard).
//!
//! The engine vets a target's addresses before any secret is read, and the HTTP client
//! connects through this same resolver, which hands out only addresses it has vetted.
//! The vetted set is cached briefly, so the connection goes to exactly the addresses that
//! were checked (a DNS answer that changes between check and connect cannot sneak in a
//! private address: it would be checked again).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentsecrets_core::net::{AddressClass, TargetHost, classify};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How long a vetted answer is reused.
const VETTED_TTL: Duration = Duration::from_secs(30);

/// Why a target's addresses were refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SsrfError {
    /// The name did not resolve.
    #[error("cannot resolve host {0}")]
    Unresolved(String),
    /// An address is not public.
    #[error(
        "host {host} resolves to a {class} address, which the proxy refuses{}",
        local_hint(class)
    )]
    NonPublic {
        /// The host.
        host: String,
        /// The class of the refused address.
        class: &'static str,
    },
    /// The target is the proxy itself.
    #[error("host {0} is the proxy's own address")]
    SelfTarget(String),
}

/// How to reach a local test server, for the one refused class that can be opened up.
fn local_hint(class: &str) -> &'static str {
    if class == "loopback" {
        " (for a local test server: proxy start --allow-local-http, or \
         AGENTSECRETS_ALLOW_LOCAL_HTTP=1 for call and env without a proxy)"
    } else {
        ""
    }
}

/// Resolves and vets hosts; also the HTTP client's resolver.
#[derive(Debug)]
pub struct VettingResolver {
    allow_loopback: bool,
    own_port: Mutex<Option<u16>>,
    vetted: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

impl VettingResolver {
    /// A resolver; `allow_loopback` admits loopback addresses (for `--allow-local-http`).
    pub fn new(allow_loopback: bool) -> VettingResolver {
        VettingResolver { allow_loopback, own_port: Mutex::new(None), vetted: Mutex::default() }
    }

    /// Records the proxy's own listening port, so loopback calls to it are refused.
    pub fn set_own_port(&self, port: u16) {
        *self.own_port.lock().unwrap_or_else(|p| p.into_inner()) = Some(port);
    }

    /// Resolves `host` once and checks every address; on success the answer is what the
    /// client will connect to.
    pub async fn vet(&self, host: &TargetHost, port: u16) -> Result<Vec<IpAddr>, SsrfError> {
        let (name, addrs) = match host {
            TargetHost::Ip(ip) => (ip.to_string(), vec![*ip]),
            TargetHost::Domain(name) => (name.clone(), lookup(name, port).await?),
        };
        self.check(&name, &addrs, port)?;
        if let TargetHost::Domain(name) = host {
            self.remember(name, &addrs);
        }
        Ok(addrs)
    }

    /// Whether every address is loopback (so plain HTTP may be allowed).
    pub fn all_loopback(addrs: &[IpAddr]) -> bool {
        addrs.iter().all(|ip| classify(*ip) == AddressClass::Loopback)
    }

    fn check(&self, host: &str, addrs: &[IpAddr], port: u16) -> Result<(), SsrfError> {
        let own_port = *self.own_port.lock().unwrap_or_else(|p| p.into_inner());
        for ip in addrs {
            let class = classify(*ip);
            let loopback_ok = self.allow_loopback && class == AddressClass::Loopback;
            if !class.is_public() && !loopback_ok {
                return Err(SsrfError::NonPublic { host: host.to_owned(), class: class.name() });
            }
            let is_self = class == AddressClass::Loopback || ip.is_unspecified();
            if is_self && own_port == Some(port) {
                return Err(SsrfError::SelfTarget(host.to_owned()));
            }
        }
        Ok(())
    }

    fn remember(&self, name: &str, addrs: &[IpAddr]) {
        let mut vetted = self.vetted.lock().unwrap_or_else(|p| p.into_inner());
        vetted.retain(|_, (at, _)| at.elapsed() < VETTED_TTL);
        vetted.insert(name.to_owned(), (Instant::now(), addrs.to_vec()));
    }

    fn recall(&self, name: &str) -> Option<Vec<IpAddr>> {
        let vetted = self.vetted.lock().unwrap_or_else(|p| p.into_inner());
        let (at, addrs) = vetted.get(name)?;
        (at.elapsed() < VETTED_TTL).then(|| addrs.clone())
    }
}

async fn lookup(name: &str, port: u16) -> Result<Vec<IpAddr>, SsrfError> {
    let answers = tokio::net::lookup_host((name, port))
        .await
        .map_err(|_| SsrfError::Unresolved(name.to_owned()))?;
    let mut addrs: Vec<IpAddr> = answers.map(|a| a.ip()).collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(SsrfError::Unresolved(name.to_owned()));
    }
    Ok(addrs)
}

/// The HTTP client's view: it asks by name, and gets only vetted addresses.
#[derive(Debug, Clone)]
pub struct ClientResolver(pub Arc<VettingResolver>);

impl Resolve for ClientResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = match resolver.recall(&host) {
                Some(addrs) => addrs,
                None => {
                    // The engine vets before sending, so this runs only when the vetted
                    // answer expired mid-call: check again rather than trust DNS.
                    let addrs = lookup(&host, 0).await?;
                    resolver.check(&host, &addrs, 0)?;
                    addrs
                }
            };
            let out: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(out)
        })
    }
}
