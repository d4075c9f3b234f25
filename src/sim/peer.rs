//! Twilio's side of our two WebSocket protocols, typed: [`RelayPeer`] speaks
//! ConversationRelay (`relay::protocol`), [`MediaPeer`] speaks Media Streams
//! (`media::protocol`). `voxrelay call`, `voxrelay bench` and the integration tests
//! all drive the server through these, so a message is written in one place.
//!
//! A peer only sends and receives; what to say and when is its user's business.
//! Every receive can be bounded in time. May import the protocol modules and
//! tokio-tungstenite; nothing of the server.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::media::protocol as media;
use crate::relay::protocol as relay;

/// The socket a peer drives.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes read at a time: small, since tungstenite zero-fills its read buffer and a
/// peer's frames are small (a benchmark runs thousands of peers).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Why a peer could not go on.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("socket: {0}")]
    Socket(String),
}

/// What the server sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Received<M> {
    Message(M),
    /// A text frame that is not a message of the protocol (kept for the report).
    Unreadable(String),
    /// The server closed the socket (with its close code, if any) or it broke.
    Closed(Option<u16>),
}

/// Opens `request` (a URL, or a signed handshake request).
async fn open(request: impl IntoClientRequest + Unpin) -> Result<Ws, PeerError> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| PeerError::Connect(e.to_string()))
}

/// A message the server sends on one of the protocols.
pub trait ServerMessage: Sized {
    fn parse(text: &str) -> Option<Self>;
}

impl ServerMessage for relay::Outbound {
    fn parse(text: &str) -> Option<Self> {
        relay::parse_outbound(text).ok()
    }
}

impl ServerMessage for media::Outbound {
    fn parse(text: &str) -> Option<Self> {
        media::parse_outbound(text).ok()
    }
}

/// The socket under a peer, and what both peers do with it; each peer derefs to
/// its link, so `peer.next()` and `peer.receive(wait)` read its protocol.
pub struct Link<M> {
    ws: Ws,
    messages: PhantomData<fn() -> M>,
}

impl<M: ServerMessage> Link<M> {
    fn new(ws: Ws) -> Self {
        Self {
            ws,
            messages: PhantomData,
        }
    }

    /// The socket, to speak another protocol on it (a test of the wrong route).
    pub fn into_socket(self) -> Ws {
        self.ws
    }

    /// The socket itself, for what a peer never does (an oversized frame, a
    /// close without a word).
    pub fn socket_mut(&mut self) -> &mut Ws {
        &mut self.ws
    }

    /// Any frame, even one Twilio would never send (for tests of bad input).
    pub async fn send_frame(&mut self, frame: Message) -> Result<(), PeerError> {
        self.ws
            .send(frame)
            .await
            .map_err(|e| PeerError::Socket(e.to_string()))
    }

    async fn send_text(&mut self, text: String) -> Result<(), PeerError> {
        self.send_frame(Message::text(text)).await
    }

    /// The next text frame, or the close. Cancel-safe: nothing is lost when the
    /// future is dropped before it completes.
    async fn next_text(&mut self) -> Result<String, Option<u16>> {
        loop {
            match self.ws.next().await {
                None | Some(Err(_)) => return Err(None),
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_string()),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next text frame as sent (for tests that check the wire itself), or the
    /// close; `None` after `wait` of silence.
    pub async fn receive_text(&mut self, wait: Duration) -> Option<Result<String, Option<u16>>> {
        tokio::time::timeout(wait, self.next_text()).await.ok()
    }

    /// The next message, however long it takes. Cancel-safe.
    pub async fn next(&mut self) -> Received<M> {
        match self.next_text().await {
            Ok(text) => match M::parse(&text) {
                Some(message) => Received::Message(message),
                None => Received::Unreadable(text),
            },
            Err(code) => Received::Closed(code),
        }
    }

    /// The next message; `None` after `wait` of silence.
    pub async fn receive(&mut self, wait: Duration) -> Option<Received<M>> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }

    /// Closes the socket (a caller hanging up, a dropped connection), waiting up
    /// to `wait` for the server to close its side.
    pub async fn close(&mut self, wait: Duration) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(wait, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Twilio's side of a ConversationRelay socket.
pub struct RelayPeer {
    link: Link<relay::Outbound>,
}

impl std::ops::Deref for RelayPeer {
    type Target = Link<relay::Outbound>;
    fn deref(&self) -> &Self::Target {
        &self.link
    }
}

impl std::ops::DerefMut for RelayPeer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.link
    }
}

impl RelayPeer {
    pub async fn connect(request: impl IntoClientRequest + Unpin) -> Result<Self, PeerError> {
        Ok(Self::from_socket(open(request).await?))
    }

    /// A peer on a socket opened elsewhere (a handshake with custom headers).
    pub fn from_socket(ws: Ws) -> Self {
        Self {
            link: Link::new(ws),
        }
    }

    /// The socket, to speak another protocol on it (a test of the wrong route).
    pub fn into_socket(self) -> Ws {
        self.link.into_socket()
    }

    pub async fn send(&mut self, message: &relay::Inbound) -> Result<(), PeerError> {
        self.link.send_text(message.to_json()).await
    }

    /// The `setup` Twilio sends first, for an inbound call from `from` to `to`.
    pub async fn setup(&mut self, setup: relay::Setup) -> Result<(), PeerError> {
        self.send(&relay::Inbound::Setup(Box::new(setup))).await
    }

    /// The caller's final transcript of one utterance.
    pub async fn prompt(&mut self, text: &str, lang: Option<&str>) -> Result<(), PeerError> {
        self.send(&relay::Inbound::Prompt(relay::Prompt {
            voice_prompt: text.to_string(),
            lang: lang.map(str::to_string),
            last: Some(true),
            agent_speaking: None,
        }))
        .await
    }

    pub async fn dtmf(&mut self, key: char) -> Result<(), PeerError> {
        self.send(&relay::Inbound::Dtmf(relay::Dtmf {
            digit: key.to_string(),
        }))
        .await
    }

    /// The caller talked over the agent after hearing `heard`.
    pub async fn interrupt(&mut self, heard: &str, after: Duration) -> Result<(), PeerError> {
        self.send(&relay::Inbound::Interrupt(relay::Interrupt {
            utterance_until_interrupt: heard.to_string(),
            duration_until_interrupt_ms: Some(after.as_millis() as f64),
        }))
        .await
    }

    /// Closes the socket as a hanging-up caller does, waiting up to `wait` for the
    /// server to close its side.
    pub async fn hang_up(&mut self, wait: Duration) {
        self.link.close(wait).await;
    }
}

/// A `setup` with the fields Twilio fills in for an inbound PSTN call.
pub fn inbound_setup(
    call_sid: &str,
    session_id: &str,
    from: &str,
    to: &str,
    parameters: HashMap<String, String>,
) -> relay::Setup {
    relay::Setup {
        session_id: session_id.to_string(),
        call_sid: call_sid.to_string(),
        account_sid: "AC00000000000000000000000000000000".to_string(),
        parent_call_sid: Some(String::new()),
        from: from.to_string(),
        to: to.to_string(),
        call_type: Some("PSTN".into()),
        caller_name: Some(String::new()),
        direction: Some("inbound".into()),
        call_status: Some("RINGING".into()),
        custom_parameters: parameters,
        ..relay::Setup::default()
    }
}

/// Twilio's side of a Media Streams socket: one stream, numbered chunks.
pub struct MediaPeer {
    link: Link<media::Outbound>,
    stream_sid: String,
    /// Set by `start`, repeated in `stop`.
    call_sid: String,
    chunk: u64,
}

impl std::ops::Deref for MediaPeer {
    type Target = Link<media::Outbound>;
    fn deref(&self) -> &Self::Target {
        &self.link
    }
}

impl std::ops::DerefMut for MediaPeer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.link
    }
}

impl MediaPeer {
    pub async fn connect(
        request: impl IntoClientRequest + Unpin,
        stream_sid: &str,
    ) -> Result<Self, PeerError> {
        Ok(Self::from_socket(open(request).await?, stream_sid))
    }

    /// A peer on a socket opened elsewhere (a handshake with custom headers).
    pub fn from_socket(ws: Ws, stream_sid: &str) -> Self {
        Self {
            link: Link::new(ws),
            stream_sid: stream_sid.to_string(),
            call_sid: String::new(),
            chunk: 0,
        }
    }

    pub fn stream_sid(&self) -> &str {
        &self.stream_sid
    }

    pub async fn send(&mut self, message: &media::Inbound) -> Result<(), PeerError> {
        self.link.send_text(message.to_json()).await
    }

    /// `connected`, then `start` for `call_sid` with these `<Parameter>`s.
    pub async fn start(
        &mut self,
        call_sid: &str,
        parameters: HashMap<String, String>,
    ) -> Result<(), PeerError> {
        self.call_sid = call_sid.to_string();
        self.send(&media::Inbound::Connected(media::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        }))
        .await?;
        self.send(&media::Inbound::Start(media::StartEvent {
            sequence_number: Some(1),
            stream_sid: self.stream_sid.clone(),
            start: media::Start {
                account_sid: "AC00000000000000000000000000000000".into(),
                stream_sid: self.stream_sid.clone(),
                call_sid: call_sid.into(),
                tracks: vec!["inbound".into()],
                media_format: Default::default(),
                custom_parameters: parameters,
            },
        }))
        .await
    }

    /// One frame of caller audio (8 kHz µ-law), numbered and stamped as Twilio does.
    pub async fn media(&mut self, mulaw: &[u8]) -> Result<(), PeerError> {
        self.chunk += 1;
        let mut media = media::Media::from_mulaw(mulaw);
        media.track = Some("inbound".into());
        media.chunk = Some(self.chunk);
        media.timestamp = Some(self.chunk * 20);
        self.send(&media::Inbound::Media(media::MediaEvent {
            sequence_number: None,
            stream_sid: self.stream_sid.clone(),
            media,
        }))
        .await
    }

    pub async fn dtmf(&mut self, key: char) -> Result<(), PeerError> {
        self.send(&media::Inbound::Dtmf(media::DtmfEvent {
            sequence_number: None,
            stream_sid: self.stream_sid.clone(),
            dtmf: media::Dtmf {
                track: Some("inbound_track".into()),
                digit: key.to_string(),
            },
        }))
        .await
    }

    /// A mark coming back: the audio before it has played.
    pub async fn mark(&mut self, name: &str) -> Result<(), PeerError> {
        self.send(&media::Inbound::Mark(media::MarkEvent {
            sequence_number: None,
            stream_sid: self.stream_sid.clone(),
            mark: media::Mark { name: name.into() },
        }))
        .await
    }

    /// The caller hung up.
    pub async fn stop(&mut self) -> Result<(), PeerError> {
        self.send(&media::Inbound::Stop(media::StopEvent {
            sequence_number: None,
            stream_sid: self.stream_sid.clone(),
            stop: media::Stop {
                account_sid: "AC00000000000000000000000000000000".into(),
                call_sid: self.call_sid.clone(),
            },
        }))
        .await
    }
}
