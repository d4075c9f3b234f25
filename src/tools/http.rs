//! HTTP tools from the agent file: the model's arguments go to your endpoint as a
//! JSON body (`POST`, `PUT`, `PATCH`) or as query parameters (`GET`, `DELETE`),
//! with the configured headers, under the tool's timeout; the response body (at
//! most [`MAX_RESPONSE_BYTES`]) goes back to the model.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{Tool, ToolContext, ToolError, ToolOutput};
use crate::config::HttpToolConfig;
use crate::llm::ToolSpec;
use crate::text::SharedJson;

/// The most of a response body handed to the model.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// Redirects an HTTP tool follows at most.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client every HTTP tool shares (connection pooling). A tool's headers
/// often carry secrets (`X-Api-Key: ${VAR}`), so it follows redirects only within
/// the same origin (scheme, host and port: never to another host, never from
/// https down to http); any other redirect is handed back as the response.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if !same_origin {
                tracing::warn!(
                    to = %attempt.url().origin().ascii_serialization(),
                    "an HTTP tool was redirected to another origin; not following it"
                );
                attempt.stop()
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
        .user_agent(concat!("voxrelay/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// One configured HTTP tool.
pub struct HttpTool {
    config: HttpToolConfig,
    /// The configured schema, serialised once.
    parameters: SharedJson,
    client: reqwest::Client,
}

impl HttpTool {
    pub fn new(config: HttpToolConfig, client: reqwest::Client) -> Self {
        let parameters = SharedJson::new((*config.parameters).clone());
        Self {
            config,
            parameters,
            client,
        }
    }
}

impl Tool for HttpTool {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn spec(&self, _: &ToolContext) -> ToolSpec {
        ToolSpec {
            name: self.config.name.clone(),
            description: self.config.description.clone(),
            parameters: self.parameters.clone(),
        }
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }

    fn call(
        &self,
        args: Map<String, Value>,
        ctx: &ToolContext,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let config = &self.config;
        let method =
            reqwest::Method::from_bytes(config.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut request = self
            .client
            .request(method.clone(), &config.url)
            .timeout(config.timeout)
            .header("x-voxrelay-call-sid", &ctx.call_sid);
        for (name, value) in &config.headers {
            request = request.header(name.as_str(), value.expose());
        }
        request = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            let query: Vec<(String, String)> = args
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), s.clone()),
                    other => (k.clone(), other.to_string()),
                })
                .collect();
            request.query(&query)
        } else {
            request.json(&Value::Object(args))
        };
        let name = config.name.clone();
        let limit = config.timeout;
        async move {
            let mut response = request.send().await.map_err(|e| {
                tracing::warn!(tool = %name, error = %e, "HTTP tool request failed");
                if e.is_timeout() {
                    ToolError::Timeout(limit)
                } else {
                    ToolError::Failed(format!("the service could not be reached: {}", short(&e)))
                }
            })?;
            let status = response.status();
            let mut body: Vec<u8> = Vec::new();
            let mut truncated = false;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = MAX_RESPONSE_BYTES - body.len();
                        if chunk.len() > room {
                            body.extend_from_slice(&chunk[..room]);
                            truncated = true;
                            break;
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) if e.is_timeout() => return Err(ToolError::Timeout(limit)),
                    Err(e) => {
                        return Err(ToolError::Failed(format!(
                            "the service's answer broke off: {}",
                            short(&e)
                        )));
                    }
                }
            }
            let mut text = String::from_utf8_lossy(&body).into_owned();
            if truncated {
                // Cut at a char boundary; the lossy decode may have ended in U+FFFD.
                text = text.trim_end_matches('\u{FFFD}').to_string();
                text.push_str("…[truncated]");
            }
            tracing::info!(tool = %name, status = status.as_u16(), bytes = body.len(), "HTTP tool answered");
            if status.is_success() {
                Ok(ToolOutput {
                    content: if text.trim().is_empty() {
                        format!("{{\"ok\":true,\"status\":{}}}", status.as_u16())
                    } else {
                        text
                    },
                    effect: None,
                })
            } else {
                Err(ToolError::Failed(format!(
                    "the service answered HTTP {}: {text}",
                    status.as_u16()
                )))
            }
        }
        .boxed()
    }
}

/// A reqwest error without the URL (which may carry query secrets).
fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "invalid response body".into()
    } else {
        "request error".into()
    }
}
