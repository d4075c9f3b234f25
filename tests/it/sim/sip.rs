//! `voxrelay call --sip` against the real server: the simulator plays OpenAI's
//! side (signed webhook, call control, sideband) and the server runs the call.

use std::time::Duration;

use voxrelay::sim::{self, CallOptions};

use crate::support::fake_openai::{KEY, SECRET};
use crate::support::{free_port, spawn_app};

fn write_script(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voxrelay-sip-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn server_for(listen: &str) -> crate::support::TestApp {
    let base = format!("http://{listen}/v1");
    spawn_app(&[
        ("OPENAI_WEBHOOK_SECRET", SECRET),
        ("OPENAI_API_KEY", KEY),
        ("SIP_API_BASE", base.as_str()),
        ("SYSTEM_PROMPT", "Você é a Bia, da Clínica Sorriso."),
        ("WELCOME_GREETING", "Olá! Aqui é a Bia."),
        ("DTMF_TIMEOUT_MS", "100"),
    ])
    .await
}

#[tokio::test]
async fn a_scripted_sip_call_runs_end_to_end_and_the_agent_hangs_up() {
    let listen = format!("127.0.0.1:{}", free_port());
    let app = server_for(&listen).await;
    let script = write_script(
        "sip.txt",
        "Quero marcar uma limpeza.\n\
         /dtmf 12#\n\
         /tool schedule_appointment {\"name\": \"Ana\", \"preferred_day\": \"amanhã\"}\n\
         /tool end_call {}\n",
    );
    let options = CallOptions {
        url: app.url("/webhooks/openai"),
        sip: true,
        sip_listen: listen,
        webhook_secret: Some(SECRET.into()),
        script: Some(script),
        params: [("lead".to_string(), "L-7".to_string())].into(),
        ..CallOptions::default()
    };
    let mut out = Vec::new();
    let report = sim::run(&options, tokio::io::empty(), &mut out)
        .await
        .expect("the call runs");
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("webhook answered 200"), "{printed}");
    assert!(
        printed.contains("accepted: model \"gpt-realtime\""),
        "{printed}"
    );
    assert!(printed.contains("end_call"), "{printed}");
    assert!(printed.contains("Olá! Aqui é a Bia."), "{printed}");
    assert!(printed.contains("caller item: [keypad] 12#"), "{printed}");
    assert!(printed.contains("tool result for"), "{printed}");
    assert!(printed.contains("the server hung up"), "{printed}");
    assert_eq!(
        report.ended_by_agent.as_deref(),
        Some("hangup"),
        "{printed}"
    );

    let sid = report.call_sid.clone();
    assert!(sid.starts_with("rtc_"));
    let store = app.state.store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let detail = loop {
        if let Some(detail) = store.get_call(&sid).await.unwrap()
            && detail.call.status == "completed"
        {
            break detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record for {sid}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(detail.call.mode.as_deref(), Some("sip"));
    assert_eq!(detail.call.from.as_deref(), Some("+5511999990000"));
    assert_eq!(detail.appointments, 1);
    let transcript = store.transcript(&sid).await.unwrap().unwrap();
    let texts: Vec<&str> = transcript.turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["Quero marcar uma limpeza.", "DTMF: 12#"]);
}

#[tokio::test]
async fn a_wrong_secret_is_reported_to_the_user() {
    let listen = format!("127.0.0.1:{}", free_port());
    let app = server_for(&listen).await;
    let options = CallOptions {
        url: app.url("/webhooks/openai"),
        sip: true,
        sip_listen: listen,
        webhook_secret: Some("whsec_bm90LXRoZS1zZWNyZXQ=".into()),
        ..CallOptions::default()
    };
    let mut out = Vec::new();
    let error = sim::run(&options, tokio::io::empty(), &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("403") && error.contains("invalid webhook signature"),
        "{error}"
    );
}

#[test]
fn sip_flags_and_the_tool_command() {
    let args: Vec<String> = [
        "--sip",
        "--live",
        "--listen",
        "127.0.0.1:9001",
        "--webhook-secret",
        "whsec_x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let options = CallOptions::from_args(&args).unwrap();
    assert!(options.sip && options.live);
    assert_eq!(options.url, "http://127.0.0.1:8080/webhooks/openai");
    assert_eq!(options.sip_listen, "127.0.0.1:9001");
    assert_eq!(options.webhook_secret.as_deref(), Some("whsec_x"));
    assert_eq!(
        sim::Command::parse("/tool end_call {\"reason\": \"done\"}"),
        Ok(sim::Command::Tool {
            name: "end_call".into(),
            arguments: "{\"reason\": \"done\"}".into()
        })
    );
    assert_eq!(
        sim::Command::parse("/tool end_call"),
        Ok(sim::Command::Tool {
            name: "end_call".into(),
            arguments: "{}".into()
        })
    );
    assert!(sim::Command::parse("/tool end_call {oops").is_err());
}
