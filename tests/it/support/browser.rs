//! A real headless Chromium for the console's tests, driven over W3C WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by `scripts/setup.sh`).
//! A small client over reqwest: navigate, find by CSS selector, click, type,
//! read text, run a script, take a screenshot. Every wait is bounded. Where
//! Chromium or ChromeDriver is missing, [`Browser::start`] prints a notice and
//! returns `None`, and the test skips.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// How long a test waits for something to appear on the page.
const WAIT: Duration = Duration::from_secs(10);
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    _driver: Child,
}

fn find_binary(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let candidate = std::path::Path::new(dir).join(name);
            if candidate.is_file() {
                return Some(candidate.display().to_string());
            }
        }
    }
    None
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium whose languages are `lang`
    /// (`en-US`, `pt-BR`); `None` (with a notice) when they are not installed.
    pub async fn start(test: &str, lang: &str) -> Option<Self> {
        let (Some(driver), Some(chromium)) = (
            find_binary(&["chromedriver"]),
            find_binary(&["chromium", "chromium-browser"]),
        ) else {
            eprintln!(
                "skipping {test}: chromium and chromedriver are not installed (scripts/setup.sh installs them)"
            );
            return None;
        };
        let port = super::free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if ready.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--autoplay-policy=no-user-gesture-required",
                         format!("--lang={lang}")],
                "prefs": {"intl.accept_languages": lang},
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("a WebDriver session")
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Some(Self {
            http,
            session: format!("{base}/session/{id}"),
            _driver: child,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element matching `css` once it exists.
    pub async fn find(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_string();
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self
                    .run(
                        "return location.href + ' :: ' + document.body.innerText",
                        json!([]),
                    )
                    .await;
                panic!("no element {css:?} on the page ({found}); the page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                Some(json!({})),
            )
            .await;
        assert!(answer.get("error").is_none(), "click {css}: {answer}");
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Waits until the element matching `css` shows `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let script =
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;";
            let text = self.run(script, json!([css])).await;
            if let Some(text) = text.as_str()
                && text.contains(needle)
            {
                return text.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css:?} never showed {needle:?}; it shows {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script` until it returns true.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.run(script, json!([])).await == json!(true) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the window's size (a phone's, say).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
