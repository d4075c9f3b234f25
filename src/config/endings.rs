//! How calls end when nobody ends them (README "How calls end"): the caller's
//! silence and a goodbye the model spoke without calling `end_call`. May import
//! `vars`.

use std::time::Duration;

use super::Vars;

pub const DEFAULT_STILL_THERE_MESSAGE: &str = "Você ainda está aí?";
pub const DEFAULT_VOICEMAIL_MESSAGE: &str =
    "Olá {name}, aqui é {agent_name}. Tentei falar com você e ligo de novo em breve. Obrigado!";
pub const DEFAULT_SCREENING_MESSAGE: &str = "Olá, aqui é {agent_name}, assistente virtual, ligando sobre {reason}. Pode chamar a pessoa, por favor?";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndingsConfig {
    /// `SILENCE_TIMEOUT_SECS` (default 20; 0 turns it off): after the agent has
    /// finished speaking and the caller has said nothing for this long, the agent
    /// asks once whether they are still there; as long again, it says goodbye and
    /// ends the call.
    pub silence_timeout: Option<Duration>,
    /// `STILL_THERE_MESSAGE`: the question.
    pub still_there_message: String,
    /// `END_ON_GOODBYE` (default true): a reply that is a goodbye ends the call
    /// even when the model did not call `end_call`.
    pub end_on_goodbye: bool,
    /// `VOICEMAIL_MESSAGE`: left on a voicemail, then the call ends (`{name}` and
    /// the other `{keys}` are the call's parameters, `{agent_name}` is `AGENT_NAME`).
    pub voicemail_message: String,
    /// `SCREENING_MESSAGE`: said to a call-screening assistant (`{reason}` is the
    /// call's `reason` parameter).
    pub screening_message: String,
    /// `BUSY_MESSAGE`: said (then `<Hangup/>`) to a caller turned away at
    /// `MAX_CALLS`; unset, the call is rejected as busy (`<Reject reason="busy"/>`,
    /// unanswered and unbilled).
    pub busy_message: Option<String>,
}

pub(super) fn read(env: &mut Vars) -> EndingsConfig {
    let secs: u64 = env.parse("SILENCE_TIMEOUT_SECS", 20u64);
    EndingsConfig {
        silence_timeout: (secs > 0).then(|| Duration::from_secs(secs)),
        still_there_message: env
            .get("STILL_THERE_MESSAGE")
            .unwrap_or_else(|| DEFAULT_STILL_THERE_MESSAGE.to_string()),
        end_on_goodbye: env.parse("END_ON_GOODBYE", true),
        voicemail_message: env
            .get("VOICEMAIL_MESSAGE")
            .unwrap_or_else(|| DEFAULT_VOICEMAIL_MESSAGE.to_string()),
        screening_message: env
            .get("SCREENING_MESSAGE")
            .unwrap_or_else(|| DEFAULT_SCREENING_MESSAGE.to_string()),
        busy_message: env.get("BUSY_MESSAGE"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::time::Duration;

    #[test]
    fn defaults_and_off() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.endings.silence_timeout, Some(Duration::from_secs(20)));
        assert!(c.endings.end_on_goodbye);
        let c = Config::from_pairs(&[
            ("SILENCE_TIMEOUT_SECS", "0"),
            ("END_ON_GOODBYE", "false"),
            ("STILL_THERE_MESSAGE", "Alô?"),
        ])
        .unwrap();
        assert_eq!(c.endings.silence_timeout, None);
        assert!(!c.endings.end_on_goodbye);
        assert_eq!(c.endings.still_there_message, "Alô?");
    }
}
