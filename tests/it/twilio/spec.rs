//! Every request voxrelay sends to Twilio's REST API, checked against Twilio's own
//! OpenAPI description (`tests/fixtures/twilio_api_v2010.json`): the path exists with
//! that method, every form or query field is one the operation declares, required
//! fields are present, only array fields repeat, and enum and boolean values are valid.

use serde_json::Value;
use voxrelay::twilio::client::{
    ApiRequest, Method, NewCall, create_call_request, end_call_request, list_numbers_request,
    update_call_twiml_request,
};

fn spec() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/twilio_api_v2010.json"
    );
    let text = std::fs::read_to_string(path).expect("the Twilio OpenAPI spec is vendored");
    serde_json::from_str(&text).expect("the spec is JSON")
}

/// Resolves a `{"$ref": "#/components/…"}`.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            spec.pointer(pointer)
                .unwrap_or_else(|| panic!("unresolved {reference}"))
        }
        None => schema,
    }
}

/// The spec path template matching a concrete path, e.g. `/…/Calls/{Sid}.json`.
fn template_for<'a>(spec: &'a Value, path: &str) -> (&'a str, &'a Value) {
    let matches = |template: &str| {
        let t: Vec<&str> = template.split('/').collect();
        let p: Vec<&str> = path.split('/').collect();
        t.len() == p.len()
            && t.iter().zip(&p).all(|(t, p)| {
                if let (Some(open), Some(close)) = (t.find('{'), t.find('}')) {
                    let (prefix, suffix) = (&t[..open], &t[close + 1..]);
                    p.starts_with(prefix)
                        && p.ends_with(suffix)
                        && p.len() > prefix.len() + suffix.len()
                } else {
                    t == p
                }
            })
    };
    let found: Vec<_> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(template, _)| matches(template))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one spec path for {path}: {found:?}"
    );
    (found[0].0.as_str(), found[0].1)
}

fn check_value(spec: &Value, field: &str, schema: &Value, value: &str) {
    let schema = resolve(spec, schema);
    let schema = if schema["type"] == "array" {
        resolve(spec, &schema["items"])
    } else {
        schema
    };
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(
            allowed.iter().any(|a| a == value),
            "{field}={value:?} is not one of {allowed:?}"
        );
    }
    if schema["type"] == "boolean" {
        assert!(
            matches!(value, "true" | "false"),
            "{field}={value:?} is not a boolean"
        );
    }
}

/// Checks one request; returns the operation for further checks.
fn check(spec: &Value, request: &ApiRequest) -> Value {
    let (template, item) = template_for(spec, &request.path);
    let method = match request.method {
        Method::Get => "get",
        Method::Post => "post",
    };
    let operation = item
        .get(method)
        .unwrap_or_else(|| panic!("{template} has no {method}"))
        .clone();
    if request.method == Method::Post {
        let schema = resolve(
            spec,
            &operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"],
        );
        let properties = schema["properties"].as_object().expect("form properties");
        for (name, value) in &request.form {
            let property = properties
                .get(name)
                .unwrap_or_else(|| panic!("{template}: {name} is not a form field of {method}"));
            check_value(spec, name, property, value);
            let repeats = request.form.iter().filter(|(k, _)| k == name).count();
            if repeats > 1 {
                assert_eq!(
                    resolve(spec, property)["type"],
                    "array",
                    "{name} is repeated but is not an array field"
                );
            }
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            assert!(
                request.form.iter().any(|(k, _)| k == required),
                "{template}: required field {required} is missing"
            );
        }
    } else {
        assert!(request.form.is_empty(), "a GET carries no form");
    }
    let query_params: Vec<&Value> = operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| resolve(spec, p))
        .filter(|p| p["in"] == "query")
        .collect();
    for (name, value) in &request.query {
        let parameter = query_params
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{template}: {name} is not a query parameter"));
        check_value(spec, name, &parameter["schema"], value);
    }
    operation
}

/// The properties of the JSON a successful operation answers with.
fn response_properties(spec: &Value, operation: &Value, status: &str) -> Vec<String> {
    let schema = resolve(
        spec,
        &operation["responses"][status]["content"]["application/json"]["schema"],
    );
    schema["properties"]
        .as_object()
        .expect("response properties")
        .keys()
        .cloned()
        .collect()
}

fn full_call() -> NewCall {
    NewCall {
        to: "+5511999990000".into(),
        from: "+5511333330000".into(),
        twiml: "<Response><Hangup/></Response>".into(),
        status_callback: Some("https://voz.example.com/twilio/status".into()),
        record: true,
        recording_status_callback: Some("https://voz.example.com/twilio/recording".into()),
        machine_detection_callback: Some("https://voz.example.com/twilio/status".into()),
    }
}

#[test]
fn create_call_matches_the_spec() {
    let spec = spec();
    let request = create_call_request("AC0123456789abcdef0123456789abcdef", &full_call());
    let operation = check(&spec, &request);
    // Every option we support is in the request being checked.
    for name in [
        "To",
        "From",
        "Twiml",
        "StatusCallback",
        "StatusCallbackEvent",
        "Record",
        "RecordingStatusCallback",
        "MachineDetection",
        "AsyncAmdStatusCallback",
    ] {
        assert!(
            request.form.iter().any(|(k, _)| k == name),
            "{name} not sent"
        );
    }
    let fields = response_properties(&spec, &operation, "201");
    for name in ["sid", "status", "to", "from", "direction"] {
        assert!(
            fields.contains(&name.to_string()),
            "call resource lacks {name}"
        );
    }
    // The minimal request is valid too.
    check(
        &spec,
        &create_call_request(
            "AC1",
            &NewCall {
                to: "+5511999990000".into(),
                from: "+5511333330000".into(),
                twiml: "<Response/>".into(),
                ..NewCall::default()
            },
        ),
    );
}

#[test]
fn end_call_matches_the_spec() {
    let spec = spec();
    let operation = check(
        &spec,
        &end_call_request(
            "AC0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcdef",
        ),
    );
    let fields = response_properties(&spec, &operation, "200");
    assert!(fields.contains(&"status".to_string()));
}

#[test]
fn update_call_with_twiml_matches_the_spec() {
    let spec = spec();
    let request = update_call_twiml_request(
        "AC0123456789abcdef0123456789abcdef",
        "CA0123456789abcdef0123456789abcdef",
        "<Response><Dial><Number>+5511999990000</Number></Dial></Response>",
    );
    let operation = check(&spec, &request);
    assert_eq!(operation["operationId"], "UpdateCall");
    let schema = resolve(
        &spec,
        &operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"],
    );
    assert_eq!(schema["properties"]["Twiml"]["format"], "twiml");
    // The ending's other form is UpdateCall too.
    let end = check(&spec, &end_call_request("AC1", "CA1"));
    assert_eq!(end["operationId"], "UpdateCall");
}

#[test]
fn list_numbers_matches_the_spec() {
    let spec = spec();
    let operation = check(
        &spec,
        &list_numbers_request("AC0123456789abcdef0123456789abcdef"),
    );
    let fields = response_properties(&spec, &operation, "200");
    assert!(
        fields.contains(&"incoming_phone_numbers".to_string()),
        "{fields:?}"
    );
    let item = resolve(
        &spec,
        &resolve(
            &spec,
            &operation["responses"]["200"]["content"]["application/json"]["schema"],
        )["properties"]["incoming_phone_numbers"]["items"],
    );
    for name in [
        "sid",
        "phone_number",
        "friendly_name",
        "voice_url",
        "capabilities",
    ] {
        assert!(
            item["properties"].get(name).is_some(),
            "number lacks {name}"
        );
    }
}

#[test]
fn the_checker_catches_a_wrong_field() {
    let spec = spec();
    let mut request = end_call_request("AC1", "CA1");
    request.form.push(("Statuss".into(), "completed".into()));
    let caught = std::panic::catch_unwind(|| check(&spec, &request));
    assert!(caught.is_err(), "a misspelt field must fail the check");
    let mut request = end_call_request("AC1", "CA1");
    request.form[0].1 = "hangup".into();
    let caught = std::panic::catch_unwind(|| check(&spec, &request));
    assert!(caught.is_err(), "an invalid enum value must fail the check");
}
