//! TURN messages on the wire: reading requests and indications into plain values, writing
//! responses and Data indications. Every call into `stun-types` / `turn-types` for TURN methods
//! lives here (auth.rs uses their integrity helpers), so a bump of those crates touches two files.

use std::net::SocketAddr;

use stun_types::attribute::{
    Attribute, AttributeStaticType, AttributeType, ErrorCode, MessageIntegrity, MessageIntegritySha256,
    Nonce, PasswordAlgorithm, Realm, Software, UnknownAttributes, Userhash, Username, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteVec,
    BINDING,
};
use stun_types::AddressFamily;
use turn_types::attribute::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

pub use stun_types::attribute::ErrorCode as StunErrorCode;

/// SOFTWARE in every response.
const SOFTWARE: &str = concat!("sluice ", env!("CARGO_PKG_VERSION"));
/// Largest payload a Data indication carries: DATA's 16-bit length less the room the other
/// attributes of the message take.
pub const MAX_INDICATION_PAYLOAD: usize = 0xFFFF - 64;

/// STUN error codes used here (RFC 8489 §14.8, RFC 8656 §18).
pub mod code {
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const FORBIDDEN: u16 = 403;
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    pub const ALLOCATION_MISMATCH: u16 = 437;
    pub const STALE_NONCE: u16 = 438;
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    pub const WRONG_CREDENTIALS: u16 = 441;
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    pub const INSUFFICIENT_CAPACITY: u16 = 508;
}

/// A TURN request, read from a STUN message (before authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Binding,
    Allocate {
        /// REQUESTED-TRANSPORT protocol number (17: UDP), None when absent.
        transport: Option<u8>,
        lifetime: Option<u32>,
        family: Option<AddressFamily>,
        even_port: bool,
        reservation: bool,
    },
    Refresh {
        lifetime: Option<u32>,
    },
    CreatePermission {
        peers: Vec<SocketAddr>,
    },
    ChannelBind {
        channel: u16,
        peer: SocketAddr,
    },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Binding => "Binding",
            Request::Allocate { .. } => "Allocate",
            Request::Refresh { .. } => "Refresh",
            Request::CreatePermission { .. } => "CreatePermission",
            Request::ChannelBind { .. } => "ChannelBind",
        }
    }
}

/// What a client sent on a TURN port, read.
#[derive(Debug)]
pub enum Incoming<'a> {
    Request(Message<'a>),
    /// A Send indication: relay `data` to `peer`.
    Send {
        peer: SocketAddr,
        data: &'a [u8],
    },
    /// Anything else (responses, other indications, malformed Send): dropped.
    Ignored,
}

/// Read a STUN packet from a client. `Err` when it does not parse.
pub fn read(data: &[u8]) -> Result<Incoming<'_>, stun_types::message::StunParseError> {
    let msg = Message::from_bytes(data)?;
    Ok(match msg.class() {
        MessageClass::Request => Incoming::Request(msg),
        MessageClass::Indication if msg.method() == SEND => {
            let tid = msg.transaction_id();
            match (msg.attribute::<XorPeerAddress>(), msg.raw_attribute(Data::TYPE)) {
                (Ok(peer), Some(_)) => {
                    let peer = peer.addr(tid);
                    // Borrow the payload from the packet itself rather than the parsed attribute.
                    match msg.raw_attribute_and_offset(Data::TYPE) {
                        Some((offset, raw)) => {
                            let start = offset + 4;
                            let len = raw.length() as usize;
                            match data.get(start..start + len) {
                                Some(d) => Incoming::Send { peer, data: d },
                                None => Incoming::Ignored,
                            }
                        }
                        None => Incoming::Ignored,
                    }
                }
                _ => Incoming::Ignored,
            }
        }
        _ => Incoming::Ignored,
    })
}

/// Attributes a TURN request may carry that this server understands.
const KNOWN: &[AttributeType] = &[
    Username::TYPE,
    Userhash::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
    PasswordAlgorithm::TYPE,
    ErrorCode::TYPE,
    XorPeerAddress::TYPE,
    Data::TYPE,
    Lifetime::TYPE,
    RequestedTransport::TYPE,
    DontFragment::TYPE,
    EvenPort::TYPE,
    ReservationToken::TYPE,
    RequestedAddressFamily::TYPE,
    ChannelNumber::TYPE,
];

/// Comprehension-required attributes of `msg` this server does not know (answer 420).
pub fn unknown_attributes(msg: &Message<'_>) -> Vec<AttributeType> {
    if msg.method() == BINDING {
        return Vec::new(); // ICE attributes (PRIORITY, USE-CANDIDATE) are fine on a Binding
    }
    let mut v: Vec<AttributeType> = msg
        .iter_attributes()
        .map(|(_, a)| a.get_type())
        .filter(|t| t.comprehension_required() && !KNOWN.contains(t))
        .collect();
    v.dedup();
    v
}

/// Read the TURN request in `msg`: Err(code) for a malformed one (or an unknown method: 400).
pub fn parse_request(msg: &Message<'_>) -> Result<Request, u16> {
    let tid = msg.transaction_id();
    let m = msg.method();
    let lifetime = || msg.attribute::<Lifetime>().ok().map(|l| l.seconds());
    if m == BINDING {
        Ok(Request::Binding)
    } else if m == ALLOCATE {
        let family = match msg.attribute::<RequestedAddressFamily>() {
            Ok(f) => Some(f.family()),
            Err(_) if msg.has_attribute(RequestedAddressFamily::TYPE) => return Err(code::BAD_REQUEST),
            Err(_) => None,
        };
        Ok(Request::Allocate {
            transport: msg.attribute::<RequestedTransport>().ok().map(|t| t.protocol()),
            lifetime: lifetime(),
            family,
            even_port: msg.has_attribute(EvenPort::TYPE),
            reservation: msg.has_attribute(ReservationToken::TYPE),
        })
    } else if m == REFRESH {
        Ok(Request::Refresh { lifetime: lifetime() })
    } else if m == CREATE_PERMISSION {
        let mut peers = Vec::new();
        for (_, raw) in msg.iter_attributes() {
            if raw.get_type() == XorPeerAddress::TYPE {
                let a = XorPeerAddress::try_from(&raw).map_err(|_| code::BAD_REQUEST)?;
                peers.push(a.addr(tid));
            }
        }
        if peers.is_empty() {
            return Err(code::BAD_REQUEST);
        }
        Ok(Request::CreatePermission { peers })
    } else if m == CHANNEL_BIND {
        match (msg.attribute::<ChannelNumber>(), msg.attribute::<XorPeerAddress>()) {
            (Ok(c), Ok(p)) => Ok(Request::ChannelBind { channel: c.channel(), peer: p.addr(tid) }),
            _ => Err(code::BAD_REQUEST),
        }
    } else {
        Err(code::BAD_REQUEST)
    }
}

fn finish(mut w: MessageWriteVec, key: Option<&IntegrityKey>) -> Vec<u8> {
    let _ = w.add_attribute(&Software::new(SOFTWARE).expect("SOFTWARE is short"));
    if let Some(key) = key {
        // Errors here mean an attribute was written after MESSAGE-INTEGRITY: a bug, not input.
        let _ = w.add_message_integrity_with_key(key, IntegrityAlgorithm::Sha1);
    }
    let _ = w.add_fingerprint();
    w.finish()
}

/// One attribute of a success response.
pub enum Attr {
    XorMapped(SocketAddr),
    XorRelayed(SocketAddr),
    Lifetime(u32),
}

/// A success response to `req`, signed with `key` when given.
pub fn success(req: &Message<'_>, attrs: &[Attr], key: Option<&IntegrityKey>) -> Vec<u8> {
    let mut w = Message::builder_success(req, MessageWriteVec::with_capacity(128));
    let tid = req.transaction_id();
    for a in attrs {
        let _ = match *a {
            Attr::XorMapped(addr) => w.add_attribute(&XorMappedAddress::new(addr, tid)),
            Attr::XorRelayed(addr) => w.add_attribute(&XorRelayedAddress::new(addr, tid)),
            Attr::Lifetime(s) => w.add_attribute(&Lifetime::new(s)),
        };
    }
    finish(w, key)
}

fn error_code(code: u16) -> ErrorCode {
    ErrorCode::builder(code)
        .build()
        .unwrap_or_else(|_| ErrorCode::builder(500).build().expect("500 is in range"))
}

/// An error response; signed with `key` when the request was authenticated.
pub fn error(req: &Message<'_>, code: u16, key: Option<&IntegrityKey>) -> Vec<u8> {
    let mut w = Message::builder_error(req, MessageWriteVec::with_capacity(96));
    let _ = w.add_attribute(&error_code(code));
    finish(w, key)
}

/// 401 or 438 with the realm and a fresh nonce: the long-term credential challenge.
pub fn challenge(req: &Message<'_>, code: u16, realm: &str, nonce: &str) -> Vec<u8> {
    let mut w = Message::builder_error(req, MessageWriteVec::with_capacity(128));
    let _ = w.add_attribute(&error_code(code));
    if let Ok(r) = Realm::new(realm) {
        let _ = w.add_attribute(&r);
    }
    if let Ok(n) = Nonce::new(nonce) {
        let _ = w.add_attribute(&n);
    }
    finish(w, None)
}

/// 420 listing the attributes not understood.
pub fn unknown(req: &Message<'_>, attrs: &[AttributeType]) -> Vec<u8> {
    let mut w = Message::builder_error(req, MessageWriteVec::with_capacity(96));
    let _ = w.add_attribute(&error_code(code::UNKNOWN_ATTRIBUTE));
    let _ = w.add_attribute(&UnknownAttributes::new(attrs));
    finish(w, None)
}

/// A Data indication carrying `payload` from `peer`; None when the payload is too large.
pub fn data_indication(peer: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() > MAX_INDICATION_PAYLOAD {
        return None;
    }
    let mut w = Message::builder_indication(DATA, MessageWriteVec::with_capacity(payload.len() + 48));
    let tid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(peer, tid)).ok()?;
    w.add_attribute(&Data::new(payload)).ok()?;
    Some(w.finish())
}

/// The STUN error code of a response, for tests and logs.
pub fn response_code(data: &[u8]) -> Option<u16> {
    let m = Message::from_bytes(data).ok()?;
    match m.class() {
        MessageClass::Success => Some(200),
        MessageClass::Error => m.attribute::<ErrorCode>().ok().map(|e| e.code()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_types::attribute::Fingerprint;
    use stun_types::message::TransactionId;

    fn allocate_request() -> Vec<u8> {
        let mut w = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
        w.add_attribute(&Lifetime::new(1200)).unwrap();
        w.add_attribute(&DontFragment::new()).unwrap();
        w.finish()
    }

    #[test]
    fn parses_allocate() {
        let raw = allocate_request();
        let Incoming::Request(m) = read(&raw).unwrap() else { panic!("not a request") };
        assert!(unknown_attributes(&m).is_empty());
        assert_eq!(
            parse_request(&m),
            Ok(Request::Allocate {
                transport: Some(17),
                lifetime: Some(1200),
                family: None,
                even_port: false,
                reservation: false
            })
        );
        let ok =
            success(&m, &[Attr::Lifetime(600)], Some(&crate::turn_core::auth::long_term_key("u", "p", "r")));
        assert_eq!(response_code(&ok), Some(200));
        let m2 = Message::from_bytes(&ok).unwrap();
        assert!(m2.has_attribute(MessageIntegrity::TYPE) && m2.has_attribute(Fingerprint::TYPE));
        assert!(m2
            .validate_integrity_with_key(&crate::turn_core::auth::long_term_key("u", "p", "r"))
            .is_ok());
        assert_eq!(response_code(&challenge(&m, 401, "realm", "nonce")), Some(401));
        assert_eq!(response_code(&error(&m, 486, None)), Some(486));
    }

    #[test]
    fn unknown_comprehension_required_attribute() {
        let mut w = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        w.add_attribute(&stun_types::attribute::RawAttribute::new(0x7777.into(), &[1, 2, 3, 4])).unwrap();
        w.add_attribute(&stun_types::attribute::RawAttribute::new(0x8777.into(), &[1, 2, 3, 4])).unwrap();
        let raw = w.finish();
        let m = Message::from_bytes(&raw).unwrap();
        let u = unknown_attributes(&m);
        assert_eq!(u, vec![AttributeType::new(0x7777)]);
        assert_eq!(response_code(&unknown(&m, &u)), Some(420));
    }

    #[test]
    fn parses_permissions_channels_and_send() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut w = Message::builder_request(CREATE_PERMISSION, MessageWriteVec::new());
        let tid = w.transaction_id();
        w.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        w.add_attribute(&XorPeerAddress::new("[::1]:9".parse().unwrap(), tid)).unwrap();
        let raw = w.finish();
        let m = Message::from_bytes(&raw).unwrap();
        assert_eq!(
            parse_request(&m),
            Ok(Request::CreatePermission { peers: vec![peer, "[::1]:9".parse().unwrap()] })
        );
        let raw = Message::builder_request(CREATE_PERMISSION, MessageWriteVec::new()).finish();
        assert_eq!(parse_request(&Message::from_bytes(&raw).unwrap()), Err(400));

        let mut w = Message::builder_request(CHANNEL_BIND, MessageWriteVec::new());
        let tid = w.transaction_id();
        w.add_attribute(&ChannelNumber::new(0x4001)).unwrap();
        w.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        let raw = w.finish();
        assert_eq!(
            parse_request(&Message::from_bytes(&raw).unwrap()),
            Ok(Request::ChannelBind { channel: 0x4001, peer })
        );

        let mut w = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = w.transaction_id();
        w.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        w.add_attribute(&Data::new(b"xyz")).unwrap();
        let raw = w.finish();
        match read(&raw).unwrap() {
            Incoming::Send { peer: p, data } => assert_eq!((p, data), (peer, &b"xyz"[..])),
            other => panic!("{other:?}"),
        }
        let ind = data_indication(peer, b"hello").unwrap();
        let m = Message::from_bytes(&ind).unwrap();
        assert_eq!(m.method(), DATA);
        assert_eq!(m.attribute::<XorPeerAddress>().unwrap().addr(m.transaction_id()), peer);
        assert_eq!(m.attribute::<Data>().unwrap().data(), b"hello");
        assert!(data_indication(peer, &vec![0; MAX_INDICATION_PAYLOAD + 1]).is_none());
        let _ = TransactionId::generate();
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base = allocate_request();
        for i in 0..20_000 {
            // Mutate a valid request (keeps the parser past the header), or random bytes.
            let mut b = if i % 2 == 0 {
                base.clone()
            } else {
                (0..(next() % 120) as usize).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 6) {
                if !b.is_empty() {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
            }
            if let Ok(Incoming::Request(m)) = read(&b) {
                let _ = unknown_attributes(&m);
                let _ = parse_request(&m);
            }
        }
    }
}
