//! Unit tests of the Media Streams wire protocol: both directions, lenient parsing.

use super::*;
use serde_json::{Value, json};

fn parse(text: &str) -> Inbound {
    parse_inbound(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Serialising and parsing again gives the same message.
fn round_trips(message: &Inbound) {
    assert_eq!(&parse(&message.to_json()), message);
}

// Fixtures: the frames of `docs/media-streams.md`, as Twilio's pages show them.

#[test]
fn connected_and_start_from_the_docs() {
    let connected = parse(r#"{ "event": "connected", "protocol": "Call", "version": "1.0.0" }"#);
    assert_eq!(
        connected,
        Inbound::Connected(Connected {
            protocol: "Call".into(),
            version: "1.0.0".into()
        })
    );
    round_trips(&connected);

    let start = parse(
        r#"{ "event": "start", "sequenceNumber": "1",
          "start": { "accountSid": "AC123", "streamSid": "MZ123", "callSid": "CA123",
                     "tracks": ["inbound"],
                     "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 },
                     "customParameters": { "FirstName": "Jane" } },
          "streamSid": "MZ123" }"#,
    );
    let Inbound::Start(s) = &start else {
        panic!("not start: {start:?}")
    };
    assert_eq!(s.sequence_number, Some(1));
    assert_eq!(s.stream_sid, "MZ123");
    assert_eq!(s.start.call_sid, "CA123");
    assert_eq!(s.start.account_sid, "AC123");
    assert_eq!(s.start.tracks, ["inbound"]);
    assert!(s.start.media_format.is_mulaw_8k_mono());
    assert_eq!(s.start.custom_parameters["FirstName"], "Jane");
    round_trips(&start);
    // Twilio's own shape comes back out: the sequence number as a string.
    let v: Value = serde_json::from_str(&start.to_json()).unwrap();
    assert_eq!(v["sequenceNumber"], "1");
    assert_eq!(v["start"]["mediaFormat"]["sampleRate"], 8000);
}

#[test]
fn start_with_nulls_missing_fields_and_strings_for_numbers() {
    let start = parse(
        r#"{"event":"start","sequenceNumber":1,"streamSid":"MZ1",
           "start":{"callSid":"CA1","customParameters":null,"tracks":null,
                    "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":"8000","channels":"1"},
                    "extra":true}}"#,
    );
    let Inbound::Start(s) = start else {
        panic!("not start")
    };
    assert_eq!(s.sequence_number, Some(1));
    assert!(s.start.custom_parameters.is_empty());
    assert!(s.start.tracks.is_empty());
    assert!(s.start.media_format.is_mulaw_8k_mono());

    // No mediaFormat at all: the documented format is assumed.
    let Inbound::Start(s) = parse(r#"{"event":"start","start":{"mediaFormat":null}}"#) else {
        panic!("not start")
    };
    assert_eq!(s.sequence_number, None);
    assert!(s.start.media_format.is_mulaw_8k_mono());
    // A different format is visible, not silently accepted.
    let Inbound::Start(s) = parse(
        r#"{"event":"start","start":{"mediaFormat":{"encoding":"audio/l16","sampleRate":16000,"channels":1},
            "customParameters":{"n":3,"b":false,"z":null}}}"#,
    ) else {
        panic!("not start")
    };
    assert!(!s.start.media_format.is_mulaw_8k_mono());
    assert_eq!(s.start.media_format.sample_rate, 16000);
    assert_eq!(s.start.custom_parameters["n"], "3");
    assert_eq!(s.start.custom_parameters["b"], "false");
    assert_eq!(s.start.custom_parameters["z"], "");
}

#[test]
fn media_payload_and_lenient_counters() {
    let audio = [0xFFu8, 0x7F, 0x00, 0x80, 0x12];
    for raw in [
        r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"/38AgBI="},"streamSid":"MZ1"}"#,
        r#"{"event":"media","sequenceNumber":4,"media":{"track":"inbound","chunk":2,"timestamp":5.0,"payload":"/38AgBI"},"streamSid":"MZ1"}"#,
    ] {
        let message = parse(raw);
        let Inbound::Media(m) = &message else {
            panic!("not media")
        };
        assert_eq!(m.sequence_number, Some(4));
        assert_eq!(m.media.chunk, Some(2));
        assert_eq!(m.media.timestamp, Some(5));
        assert!(m.media.is_inbound());
        assert_eq!(m.media.decode_payload().unwrap(), audio);
        round_trips(&message);
    }
    // Counters that are not numbers are dropped, not fatal.
    let Inbound::Media(m) = parse(
        r#"{"event":"media","sequenceNumber":"x","media":{"track":"outbound","timestamp":null,"chunk":-1,"payload":""}}"#,
    ) else {
        panic!("not media")
    };
    assert_eq!(
        (m.sequence_number, m.media.timestamp, m.media.chunk),
        (None, None, None)
    );
    assert!(!m.media.is_inbound());
    assert_eq!(m.media.decode_payload().unwrap(), Vec::<u8>::new());
    // Built from bytes, it encodes what Twilio expects.
    assert_eq!(Media::from_mulaw(&audio).payload, "/38AgBI=");
}

#[test]
fn bad_payloads_are_clear_errors_and_leave_the_buffer_alone() {
    let media = |payload: &str| Media {
        payload: payload.into(),
        ..Media::default()
    };
    let mut buf = vec![1, 2, 3];
    let err = media("no+JhoaJjpzS!!")
        .decode_payload_into(&mut buf)
        .unwrap_err();
    assert!(matches!(err, PayloadError::Base64(_)));
    assert!(err.to_string().starts_with("payload is not valid base64"));
    assert_eq!(buf, [1, 2, 3]);
    let huge = "A".repeat((MAX_PAYLOAD_BYTES + 1024) / 3 * 4);
    assert!(matches!(
        media(&huge).decode_payload_into(&mut buf),
        Err(PayloadError::TooLarge { .. })
    ));
    assert_eq!(buf, [1, 2, 3]);
    // Appends after what is there.
    media("/w==").decode_payload_into(&mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3, 0xFF]);
    // 160 bytes of silence, Twilio's usual frame.
    let frame = [0xFFu8; 160];
    assert_eq!(Media::from_mulaw(&frame).decode_payload().unwrap(), frame);
}

#[test]
fn checking_a_payload_agrees_with_decoding_it() {
    // Every string of up to five characters over an alphabet that holds the
    // decoder's edge cases (bits left over in the last symbol, padding, a byte
    // outside the alphabet, one outside ASCII), alone and after a valid run long
    // enough to take the bulk path: the check must say what decoding says, error
    // and all; what it accepts must be the payload itself.
    let symbols = ["A", "B", "Q", "g", "/", "=", "*", "é"];
    let prefixes = [String::new(), "no+JhoaJjpzS".repeat(18)];
    let mut level = vec![String::new()];
    let mut strings = level.clone();
    for _ in 0..5 {
        level = level
            .iter()
            .flat_map(|s| symbols.iter().map(move |c| format!("{s}{c}")))
            .collect();
        strings.extend(level.iter().cloned());
    }
    let mut checked = 0;
    for prefix in &prefixes {
        for tail in &strings {
            for payload in [format!("{prefix}{tail}"), format!("{tail}{prefix}")] {
                let media = Media {
                    payload,
                    ..Media::default()
                };
                let verdict = media.check_payload();
                assert_eq!(
                    verdict.as_ref().map(|_| ()).map_err(Clone::clone),
                    media.decode_payload().map(|_| ()),
                    "{:?}",
                    media.payload
                );
                if let Ok(b64) = verdict {
                    assert_eq!(b64.as_str(), media.payload);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 4 * 8usize.pow(5));
    let huge = Media {
        payload: "A".repeat((MAX_PAYLOAD_BYTES + 1024) / 3 * 4),
        ..Media::default()
    };
    assert!(matches!(
        huge.check_payload(),
        Err(PayloadError::TooLarge { .. })
    ));
    let limit = Media::from_mulaw(&vec![0xFF; MAX_PAYLOAD_BYTES]);
    assert_eq!(limit.check_payload().map(|_| ()), Ok(()));
    let over = Media::from_mulaw(&vec![0xFF; MAX_PAYLOAD_BYTES + 1]);
    assert_eq!(
        over.check_payload().map(|_| ()),
        Err(PayloadError::TooLarge {
            bytes: MAX_PAYLOAD_BYTES + 1,
            max: MAX_PAYLOAD_BYTES
        })
    );
    assert_eq!(
        over.check_payload().map(|_| ()),
        over.decode_payload().map(|_| ())
    );
}

#[test]
fn dtmf_mark_stop_and_unknown() {
    let dtmf = parse(
        r#"{ "event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5", "dtmf": { "track": "inbound_track", "digit": "1" } }"#,
    );
    assert_eq!(
        dtmf,
        Inbound::Dtmf(DtmfEvent {
            sequence_number: Some(5),
            stream_sid: "MZ1".into(),
            dtmf: Dtmf {
                track: Some("inbound_track".into()),
                digit: "1".into()
            }
        })
    );
    round_trips(&dtmf);
    let mark = parse(
        r#"{ "event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": { "name": "my label" } }"#,
    );
    let Inbound::Mark(m) = &mark else {
        panic!("not mark")
    };
    assert_eq!(m.mark.name, "my label");
    round_trips(&mark);
    let stop = parse(
        r#"{ "event": "stop", "sequenceNumber": "5", "stop": { "accountSid": "AC1", "callSid": "CA1" }, "streamSid": "MZ1" }"#,
    );
    let Inbound::Stop(s) = &stop else {
        panic!("not stop")
    };
    assert_eq!(
        (s.stop.call_sid.as_str(), s.stream_sid.as_str()),
        ("CA1", "MZ1")
    );
    round_trips(&stop);
    // The shorter shapes of some samples (no sequence numbers) parse too.
    assert!(matches!(
        parse(
            r##"{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"#"}}"##
        ),
        Inbound::Dtmf(DtmfEvent {
            sequence_number: None,
            ..
        })
    ));
    assert!(
        matches!(parse(r#"{"event":"stop","stop":null}"#), Inbound::Stop(s) if s.stop == Stop::default())
    );
    assert_eq!(parse(r#"{"event":"streamError","x":1}"#), Inbound::Unknown);
    assert_eq!(parse(r#"{"event":"mark"}"#).event(), "mark");
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    assert!(matches!(
        parse_inbound("{not json"),
        Err(ParseError::Json(_))
    ));
    assert!(matches!(
        parse_inbound("[1]"),
        Err(ParseError::MissingEvent)
    ));
    assert!(matches!(
        parse_inbound(r#"{"media":{"payload":"AA=="}}"#),
        Err(ParseError::MissingEvent)
    ));
    assert!(matches!(
        parse_inbound(r#"{"event":7}"#),
        Err(ParseError::MissingEvent)
    ));
    let err = parse_inbound(r#"{"event":"media","media":{"payload":42}}"#).unwrap_err();
    assert!(matches!(&err, ParseError::Fields { event, .. } if event == "media"));
    assert!(err.to_string().contains("\"media\""));
    assert!(matches!(
        parse_inbound(r#"{"event":"start","start":"nope"}"#),
        Err(ParseError::Fields { .. })
    ));
}

#[test]
fn outbound_shapes_match_the_docs() {
    let cases = [
        (
            Outbound::media("MZ1", &[0xFF, 0x7F, 0x00]),
            json!({"event":"media","streamSid":"MZ1","media":{"payload":"/38A"}}),
        ),
        (
            Outbound::mark("MZ1", "responsePart"),
            json!({"event":"mark","streamSid":"MZ1","mark":{"name":"responsePart"}}),
        ),
        (
            Outbound::clear("MZ1"),
            json!({"event":"clear","streamSid":"MZ1"}),
        ),
    ];
    for (message, expected) in cases {
        let text = message.to_json();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
        assert_eq!(parse_outbound(&text).unwrap(), message);
    }
    assert!(parse_outbound(r#"{"event":"text","token":"x"}"#).is_err());
}

#[test]
fn hand_written_outbound_text_is_what_serde_writes() {
    let awkward = [
        Outbound::media("MZ1", &[1, 2, 3, 4]),
        Outbound::media("MZ\"}, \"event\":\"clear", &[0xff; 160]),
        Outbound::mark("MZ1", "turn-3.frame_12"),
        Outbound::mark("MZ1", "quote \" backslash \\ newline \n é"),
        Outbound::media("", &[]),
    ];
    for message in awkward {
        let ours = message.to_json();
        let serde = serde_json::to_string(&message).unwrap();
        assert_eq!(ours, serde);
        assert_eq!(parse_outbound(&ours).unwrap(), message);
    }
}

#[test]
fn the_media_fast_path_reads_what_the_enum_reads() {
    let frames = [
        r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"/38AgBI="},"streamSid":"MZ1"}"#,
        r#"{"event":"media","media":{"chunk":2.0,"timestamp":-3,"payload":"AAAA"}}"#,
        r#"{"event":"media","streamSid":null,"media":null}"#,
        r#"{"event":"media","event":"stop"}"#,
        r#"{"event":"media","streamSid":"M\"Z\u00e9","media":{"track":null,"payload":"A\/8="}}"#,
        r#"{"event":"media","media":{"track":"outbound","payload":null,"extra":[1,{"a":2}]},"more":true}"#,
        r#"{"event":"media","media":{"track":"","chunk":" 7 ","timestamp":"x","payload":"é"}}"#,
        r#"{"event":"media","media":{"payload":"AAAA","payload":"BBBB"}}"#,
        r#"{"event":"media","media":{"payload":5}}"#,
        r#"{"event":"media","media":{"track":5,"payload":"AAAA"}}"#,
        r#"{"event":"media","streamSid":7,"media":{}}"#,
        r#"{"event":"media","sequenceNumber":[],"media":{}}"#,
        r#"{"event":"media","media":[]}"#,
        r#"{"event":"media","media":{"payload":"AAAA"}"#,
        r#"{"event":"media","media":{"payload":"AAAA"}} trailing"#,
        r#"{"event":"media"}"#,
    ];
    for text in frames {
        let slow = serde_json::from_str::<Inbound>(text).ok();
        let fast = parse_inbound(text).ok();
        assert_eq!(fast, slow, "{text}");
        let received = match parse_received(text) {
            Ok(Received::Media(media)) => Some(Inbound::Media(media.into_event())),
            Ok(Received::Other(other)) => Some(other),
            Err(_) => None,
        };
        assert_eq!(received, slow, "{text}");
    }
    // Not a media frame after all: falls back to the enum and its errors.
    assert!(matches!(
        parse_inbound(r#"{"event":"media","media":"nope"}"#),
        Err(ParseError::Fields { .. })
    ));
    // Twilio's own frame is read in place; a string with escapes is copied.
    let text = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"/38AgBI="},"streamSid":"MZ1"}"#;
    let Ok(Received::Media(media)) = parse_received(text) else {
        panic!("not read in place")
    };
    assert!(matches!(
        media.payload,
        std::borrow::Cow::Borrowed("/38AgBI=")
    ));
    assert!(matches!(
        media.stream_sid,
        std::borrow::Cow::Borrowed("MZ1")
    ));
    assert!(media.is_inbound());
    assert_eq!(media.check_payload().unwrap().as_str(), "/38AgBI=");
    let Ok(Received::Media(media)) =
        parse_received(r#"{"event":"media","media":{"payload":"A\/8="}}"#)
    else {
        panic!("not read in place")
    };
    assert!(matches!(media.payload, std::borrow::Cow::Owned(_)));
    assert_eq!(media.payload, "A/8=");
    // Anything else goes the enum's way.
    assert!(matches!(
        parse_received(r#"{"event":"stop","stop":{}}"#),
        Ok(Received::Other(Inbound::Stop(_)))
    ));
    assert!(matches!(
        parse_received(r#"{"streamSid":"MZ1","event":"media","media":{}}"#),
        Ok(Received::Other(Inbound::Media(_)))
    ));
}
