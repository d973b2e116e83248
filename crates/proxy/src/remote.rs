//! Using a proxy that is already running, from another process on this machine.

use std::path::Path;
use std::time::Duration;

use agentsecrets_core::inject::{InjectStyle, Injection};
use bytes::Bytes;
use http::HeaderMap;

use crate::server::REFUSAL_HEADER;
use crate::session::Session;

/// A running proxy found through its session file.
#[derive(Debug, Clone)]
pub struct RunningProxy {
    session: Session,
    client: reqwest::Client,
}

/// A response from the running proxy.
#[derive(Debug)]
pub struct RemoteResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body (already scrubbed by the proxy).
    pub body: Bytes,
    /// The refusal slug, when the proxy itself refused the call.
    pub refusal: Option<String>,
}

impl RunningProxy {
    /// The proxy named by `session.json`, if it answers its health check.
    pub async fn find(session_path: &Path) -> Option<RunningProxy> {
        let session = Session::read(session_path)?;
        // A redirect is the upstream's answer, passed back as it came: following it here
        // would send the session token, the control headers and the body to wherever the
        // upstream's Location points.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()?;
        let health = format!("http://127.0.0.1:{}/health", session.port);
        let answer = client.get(health).timeout(Duration::from_secs(2)).send().await.ok()?;
        answer.status().is_success().then_some(RunningProxy { session, client })
    }

    /// Its session (port, pid, start time).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// `GET /admin/status`.
    pub async fn status(&self) -> reqwest::Result<serde_json::Value> {
        self.client
            .get(self.url("/admin/status"))
            .header("x-as-session-token", &self.session.token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await
            .map(|body| serde_json::from_slice(&body).unwrap_or_default())
    }

    /// `POST /admin/stop`.
    pub async fn stop(&self) -> reqwest::Result<()> {
        self.client
            .post(self.url("/admin/stop"))
            .header("x-as-session-token", &self.session.token)
            .send()
            .await?
            .error_for_status()
            .map(drop)
    }

    /// Sends a call through the proxy. Injections go in the case-preserving list header.
    pub async fn call(
        &self,
        spec: &crate::engine::CallSpec,
        timeout: Duration,
    ) -> reqwest::Result<RemoteResponse> {
        let mut request = self
            .client
            .post(self.url("/proxy"))
            .timeout(timeout)
            .header("x-as-session-token", &self.session.token)
            .header("x-as-target-url", &spec.target)
            .header("x-as-method", &spec.method)
            .header("x-as-inject", inject_list(&spec.injections))
            .headers(spec.headers.clone())
            .body(spec.body.clone());
        let optional = [
            ("x-as-agent-id", &spec.agent_id),
            ("x-as-agent-token", &spec.agent_token),
            ("x-as-session-id", &spec.session_id),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        if spec.explain {
            request = request.header("x-as-explain", "1");
        }

        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let refusal = headers.get(REFUSAL_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await?;
        Ok(RemoteResponse { status, headers, body, refusal })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.session.port)
    }
}

/// Renders injections in the `X-AS-Inject` list form.
pub fn inject_list(injections: &[Injection]) -> String {
    let items: Vec<String> = injections
        .iter()
        .map(|i| match &i.style {
            InjectStyle::Bearer => format!("bearer={}", i.key),
            InjectStyle::Basic => format!("basic={}", i.key),
            InjectStyle::Header(name) => format!("header:{name}={}", i.key),
            InjectStyle::Query(name) => format!("query:{name}={}", i.key),
            InjectStyle::Body(path) => format!("body:{}={}", path.join("."), i.key),
            InjectStyle::Form(name) => format!("form:{name}={}", i.key),
        })
        .collect();
    items.join(", ")
}
