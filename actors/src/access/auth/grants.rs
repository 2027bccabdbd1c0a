//! What a token lets its bearer do: the `grants` claim and stream-name patterns. Pure code.

use serde::{Deserialize, Serialize};

/// The actions the authorizer decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Publish a stream under a name.
    Publish,
    /// Play a stream by name (live, `vod://`, `rtsp://`).
    Play,
    /// Record a stream (publish with `record: true`, REST recording, downloading records).
    Record,
    /// Take a snapshot of a stream.
    Snapshot,
    /// The management REST API.
    Api,
    /// Metrics.
    Metrics,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
            Action::Record => "record",
            Action::Snapshot => "snapshot",
            Action::Api => "api",
            Action::Metrics => "metrics",
        }
    }
}

/// Stream names a grant covers: `true` (every name), `false`, or a list of patterns where `*`
/// matches any run of characters (`cam-*`, `*`, `room1/*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Names {
    All(bool),
    Patterns(Vec<String>),
    #[default]
    #[serde(skip)]
    None,
}

impl Names {
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Names::All(b) => *b,
            Names::Patterns(ps) => ps.iter().any(|p| glob(p, name)),
            Names::None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Names::None | Names::All(false)) || matches!(self, Names::Patterns(p) if p.is_empty())
    }
}

/// The `grants` claim: `{"publish": ["cam-*"], "play": ["*"], "record": true, "snapshot": true,
/// "api": false, "metrics": false}`. Anything missing is not granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    #[serde(skip_serializing_if = "Names::is_empty")]
    pub publish: Names,
    #[serde(skip_serializing_if = "Names::is_empty")]
    pub play: Names,
    #[serde(skip_serializing_if = "Names::is_empty")]
    pub record: Names,
    #[serde(skip_serializing_if = "Names::is_empty")]
    pub snapshot: Names,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub api: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub metrics: bool,
}

impl Grants {
    /// Whether these grants allow `action` on `name` (`None` for actions on no stream).
    pub fn allows(&self, action: Action, name: Option<&str>) -> bool {
        let names = match action {
            Action::Publish => &self.publish,
            Action::Play => &self.play,
            Action::Record => &self.record,
            Action::Snapshot => &self.snapshot,
            Action::Api => return self.api,
            Action::Metrics => return self.metrics || self.api,
        };
        match name {
            Some(n) => names.allows(n),
            // "Any stream at all": a list that is not empty.
            None => !names.is_empty(),
        }
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("cam-*", "cam-1", true),
            ("cam-*", "cam-", true),
            ("cam-*", "xcam-1", false),
            ("*-hd", "a-hd", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn grants_from_json() {
        let g: Grants =
            serde_json::from_str(r#"{"publish": ["cam-*"], "play": true, "record": true, "api": true}"#)
                .unwrap();
        assert!(g.allows(Action::Publish, Some("cam-7")));
        assert!(!g.allows(Action::Publish, Some("other")));
        assert!(g.allows(Action::Play, Some("whatever")));
        assert!(
            g.allows(Action::Record, Some("x"))
                && g.allows(Action::Api, None)
                && g.allows(Action::Metrics, None)
        );
        assert!(!g.allows(Action::Snapshot, Some("x")) && !g.allows(Action::Snapshot, None));
        let none = Grants::default();
        assert!(Action::Publish.as_str() == "publish" && !none.allows(Action::Play, Some("a")));
        assert!(serde_json::from_str::<Grants>(r#"{"pubish": true}"#).is_err(), "typos are errors");
        assert!(serde_json::from_str::<Grants>(r#"{"play": 3}"#).is_err());
        let round: Grants = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(round, g);
    }
}
