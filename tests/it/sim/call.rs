//! `voxrelay call` (the terminal softphone) against the real server: script mode
//! through the library and through the binary, and interactive mode on piped input.

use std::time::Duration;

use voxrelay::llm::scripted::reply_to;
use voxrelay::sim::{self, CallOptions};

use crate::support::spawn_app;

fn write_script(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voxrelay-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn script_mode_plays_every_turn_against_the_real_server() {
    // Slow enough words that the interrupt lands mid-reply.
    let app = spawn_app(&[
        ("SCRIPTED_TOKEN_DELAY_MS", "20"),
        ("DTMF_TIMEOUT_MS", "5000"),
    ])
    .await;
    let script = write_script(
        "demo.txt",
        "# a demo call\n\
         Olá, bom dia!\n\
         \n\
         Quero um orçamento para cem peças, pode ser?\n\
         /interrupt\n\
         /dtmf 4 2#\n\
         Obrigado, tchau!\n",
    );
    let options = CallOptions {
        url: app.ws_url("/websocket"),
        script: Some(script),
        reply_timeout: Duration::from_secs(5),
        ..CallOptions::default()
    };
    let mut out = Vec::new();
    let report = sim::run(&options, tokio::io::empty(), &mut out)
        .await
        .expect("the call runs");
    let printed = String::from_utf8(out).unwrap();

    assert!(report.ok(), "{printed}");
    assert!(report.call_sid.starts_with("CA") && report.call_sid.len() == 34);
    let said: Vec<&str> = report.turns.iter().map(|t| t.said.as_str()).collect();
    assert_eq!(
        said,
        [
            "Olá, bom dia!",
            "Quero um orçamento para cem peças, pode ser?",
            "DTMF: 42#",
            "Obrigado, tchau!"
        ]
    );
    // Whole replies, exactly as the agent streams them.
    assert_eq!(report.turns[0].reply, reply_to("Olá, bom dia!"));
    assert_eq!(report.turns[2].reply, reply_to("DTMF: 42#"));
    assert_eq!(report.turns[3].reply, reply_to("Obrigado, tchau!"));
    // The interrupted reply stopped after its first token.
    let cut = &report.turns[1];
    assert!(cut.interrupted);
    assert!(!cut.reply.is_empty());
    assert!(reply_to(&cut.said).starts_with(&cut.reply));
    assert!(cut.reply.len() < reply_to(&cut.said).len(), "{}", cut.reply);
    for turn in &report.turns {
        let ttft = turn
            .time_to_first_token
            .expect("every turn got a first token");
        assert!(ttft < Duration::from_secs(2), "{ttft:?}");
    }
    assert!(report.ended_by_agent.is_none() && !report.closed_by_server);

    // What a person sees: the caller's lines, streamed replies, timings.
    assert!(
        printed.contains("caller: Olá, bom dia!\nagent: Olá! Aqui é"),
        "{printed}"
    );
    assert!(printed.contains("[first token "), "{printed}");
    assert!(printed.contains("[interrupted]"), "{printed}");
    assert!(printed.contains("caller presses 42#"), "{printed}");
    assert!(printed.contains("Call ended: 4 turns"), "{printed}");
    assert!(
        !printed.contains("unprompted"),
        "a token leaked after the interrupt:\n{printed}"
    );

    // The server saw one call with four replies and one interruption.
    app.wait_active_calls(0).await;
    assert_eq!(app.state.metrics.total_calls(), 1);
    assert_eq!(app.state.metrics.turns(), 4);
    assert_eq!(app.state.metrics.interrupts(), 1);
}

#[tokio::test]
async fn interactive_mode_answers_piped_lines_then_hangs_up() {
    let app = spawn_app(&[]).await;
    let options = CallOptions {
        url: app.ws_url("/websocket"),
        ..CallOptions::default()
    };
    let input: &[u8] = "Qual o horário de funcionamento?\n".as_bytes();
    let mut out = Vec::new();
    let report = sim::run(&options, input, &mut out).await.unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert_eq!(report.turns.len(), 1, "{printed}");
    assert_eq!(
        report.turns[0].reply,
        reply_to("Qual o horário de funcionamento?")
    );
    assert!(report.turns[0].duration.is_some());
    assert!(printed.contains("agent: Nosso atendimento"), "{printed}");
    app.wait_active_calls(0).await;
}

#[tokio::test]
async fn the_call_command_runs_a_script_and_reports_failures_by_exit_code() {
    let app = spawn_app(&[]).await;
    let script = write_script("cli.txt", "Oi\n/dtmf 7#\n");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args([
            "call",
            "--url",
            &app.ws_url("/websocket"),
            "--param",
            "nome=Ana",
        ])
        .arg("--script")
        .arg(&script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("agent: {}", reply_to("Oi"))),
        "{stdout}"
    );
    assert!(stdout.contains(&reply_to("DTMF: 7#")), "{stdout}");

    // Nobody listening: a clear error and a failing exit code.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args(["call", "--url", "ws://127.0.0.1:9/websocket", "--script"])
        .arg(&script)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));

    // A bad flag is a usage error.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args(["call", "--bogus"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn the_simulator_signs_its_handshake_for_servers_that_check_it() {
    let token = "twilio-auth-token-for-tests-0123";
    // The server's public URL is the one the simulator is pointed at.
    let app = spawn_app(&[("TWILIO_AUTH_TOKEN", token), ("TRUSTED_PROXIES", "1")]).await;
    let script = write_script("signed.txt", "Oi\n");
    let mut options = CallOptions {
        url: app.ws_url("/websocket"),
        script: Some(script),
        ..CallOptions::default()
    };
    // Unsigned: refused before the upgrade.
    let refused = sim::run(&options, tokio::io::empty(), Vec::new()).await;
    let error = refused
        .expect_err("an unsigned handshake is refused")
        .to_string();
    assert!(error.contains("403"), "{error}");
    // Signed like Twilio: the call goes through.
    options.auth_token = Some(token.to_string());
    let report = sim::run(&options, tokio::io::empty(), Vec::new())
        .await
        .unwrap();
    assert_eq!(report.turns[0].reply, reply_to("Oi"));
}
