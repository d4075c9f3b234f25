//! The server with a fake OpenAI-compatible LLM and an observer that keeps every
//! record in memory: the set-up of the tool and handoff suites.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use voxrelay::AppState;
use voxrelay::agent::{AppointmentRecord, CallInfo, CallObserver, CallSummary, ToolCallRecord};

use crate::support::fake_llm::FakeLlm;
use crate::support::{TestApp, eventually, spawn_with_state, test_config};

/// Stands in for the store: keeps everything the agent reports.
#[derive(Default)]
pub struct Recorder {
    pub started: Mutex<Vec<CallInfo>>,
    pub tools: Mutex<Vec<(String, ToolCallRecord)>>,
    pub appointments: Mutex<Vec<(String, AppointmentRecord)>>,
    pub ended: Mutex<Vec<(String, CallSummary)>>,
    /// `(call, what, signal)` of every detection of who answered.
    pub answered: Mutex<Vec<(String, String, String)>>,
}

impl CallObserver for Recorder {
    fn call_started(&self, call: &CallInfo) {
        self.started.lock().unwrap().push(call.clone());
    }
    fn tool_call(&self, call_sid: &str, record: &ToolCallRecord) {
        self.tools
            .lock()
            .unwrap()
            .push((call_sid.to_string(), record.clone()));
    }
    fn appointment(&self, call_sid: &str, appointment: &AppointmentRecord) {
        self.appointments
            .lock()
            .unwrap()
            .push((call_sid.to_string(), appointment.clone()));
    }
    fn answered_by(&self, call_sid: &str, what: &str, signal: &str) {
        self.answered.lock().unwrap().push((
            call_sid.to_string(),
            what.to_string(),
            signal.to_string(),
        ));
    }
    fn call_ended(&self, call_sid: &str, summary: &CallSummary) {
        self.ended
            .lock()
            .unwrap()
            .push((call_sid.to_string(), summary.clone()));
    }
}

impl Recorder {
    /// Waits until the call's end has been reported.
    pub async fn wait_ended(&self) -> (String, CallSummary) {
        eventually("the call's end", Duration::from_secs(10), || {
            self.ended.lock().unwrap().first().cloned()
        })
        .await
    }
}

/// Writes an agent file for one test and returns its path.
pub fn agent_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join("voxrelay-test-agents");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The server with a fake LLM and a recording observer.
pub async fn app(extra: &[(&str, &str)]) -> (TestApp, FakeLlm, Arc<Recorder>) {
    let llm = FakeLlm::start().await;
    let base = llm.base_url();
    let mut vars = vec![
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test-key"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_MODEL", "fake-model"),
        ("SYSTEM_PROMPT", "Você é um assistente de testes."),
        ("WELCOME_GREETING", "Olá! Como posso ajudar?"),
        ("LLM_TIMEOUT_MS", "3000"),
    ];
    vars.extend_from_slice(extra);
    let (app, recorder) = app_with_config(&vars).await;
    (app, llm, recorder)
}

pub async fn app_with_config(vars: &[(&str, &str)]) -> (TestApp, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let mut state = AppState::new(test_config(vars)).await.expect("app state");
    state.observer = recorder.clone();
    (spawn_with_state(state).await, recorder)
}
