//! What the model is told about a call, the same for every transport: the
//! system prompt with the call's `<Parameter>`s listed after it, and the greeting
//! (a per-call one from the outbound API, else the configured one). Parameters
//! of our own (`voxrelay_…`, `pipeline`) are never call data. Pure functions; may
//! import the agent's settings.

use std::collections::HashMap;

use super::AgentSettings;

/// The `<Parameter>` carrying a per-call greeting (set by the outbound-call API):
/// what Twilio spoke first, recorded as the agent's first turn instead of the
/// configured greeting, and never shown to the model as call data.
pub const GREETING_PARAMETER: &str = "voxrelay_greeting";

/// Parameter names of our own start with this (the API refuses them from users).
pub const RESERVED_PREFIX: &str = "voxrelay_";

/// Whether a `<Parameter>` is data about the call for the model, rather than one
/// of ours (the greeting, the media pipeline's name).
pub fn is_call_data(name: &str) -> bool {
    !name.starts_with(RESERVED_PREFIX) && name != "pipeline"
}

/// How a call opens: the words spoken first and the call data the model sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOpening {
    pub greeting: String,
    /// The call's parameters that are call data ([`is_call_data`]).
    pub call_data: HashMap<String, String>,
}

impl CallOpening {
    pub fn new(settings: &AgentSettings, parameters: &HashMap<String, String>) -> Self {
        Self {
            greeting: parameters
                .get(GREETING_PARAMETER)
                .cloned()
                .unwrap_or_else(|| settings.welcome_greeting.clone()),
            call_data: parameters
                .iter()
                .filter(|(name, _)| is_call_data(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        }
    }

    /// The system prompt with this call's data after it.
    pub fn instructions(&self, settings: &AgentSettings) -> String {
        prompt_with_parameters(&settings.system_prompt, &self.call_data)
    }
}

/// What a speech-to-speech model is told to have it say `words` as they are (a
/// goodbye, the silence question, a voicemail message).
pub fn verbatim_instructions(words: &str) -> String {
    format!("Say exactly this to the caller, in its own language, and nothing else: \"{words}\"")
}

/// What a speech-to-speech model is told for its first response: its
/// instructions, then to say exactly `greeting`.
pub fn greeting_instructions(instructions: &str, greeting: &str) -> String {
    format!(
        "{instructions}\n\nStart the call now by saying exactly this greeting, in its own language, and nothing else: \"{greeting}\""
    )
}

/// The call's instructions after a switch to `language`.
pub fn language_instructions(base: &str, language: &str) -> String {
    let line = format!(
        "The caller prefers another language: from now on, speak {language} to the caller."
    );
    if base.is_empty() {
        line
    } else {
        format!("{base}\n\n{line}")
    }
}

/// The system prompt with the call's TwiML parameters listed after it (sorted),
/// for every pipeline that talks to a model.
pub fn prompt_with_parameters(system_prompt: &str, parameters: &HashMap<String, String>) -> String {
    if parameters.is_empty() {
        return system_prompt.to_string();
    }
    let mut params: Vec<_> = parameters.iter().collect();
    params.sort();
    let listed = params
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ");
    format!("{system_prompt}\n\nDados desta ligação: {listed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_list_the_parameters_sorted() {
        let mut params = HashMap::new();
        assert_eq!(
            prompt_with_parameters("Seja breve.", &params),
            "Seja breve."
        );
        params.insert("lead".to_string(), "Ana".to_string());
        params.insert("empresa".to_string(), "ACME".to_string());
        assert_eq!(
            prompt_with_parameters("Seja breve.", &params),
            "Seja breve.\n\nDados desta ligação: empresa: ACME; lead: Ana"
        );
    }

    #[test]
    fn our_parameters_are_not_call_data() {
        let settings = AgentSettings {
            welcome_greeting: "Olá!".into(),
            system_prompt: "Seja breve.".into(),
            ..AgentSettings::for_tests()
        };
        let parameters: HashMap<String, String> = [
            ("lead", "Ana"),
            ("pipeline", "cascade"),
            (GREETING_PARAMETER, "Oi Ana!"),
            ("voxrelay_other", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let opening = CallOpening::new(&settings, &parameters);
        assert_eq!(opening.greeting, "Oi Ana!");
        assert_eq!(opening.call_data.len(), 1);
        assert_eq!(
            opening.instructions(&settings),
            "Seja breve.\n\nDados desta ligação: lead: Ana"
        );
        assert_eq!(
            language_instructions("Seja breve.", "en-US"),
            "Seja breve.\n\nThe caller prefers another language: from now on, speak en-US to the caller."
        );
        assert_eq!(
            language_instructions("", "es"),
            "The caller prefers another language: from now on, speak es to the caller."
        );
        let plain = CallOpening::new(&settings, &HashMap::new());
        assert_eq!(plain.greeting, "Olá!");
        assert_eq!(plain.instructions(&settings), "Seja breve.");
    }
}
