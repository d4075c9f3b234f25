//! Reading the bench commands' flags: `voxrelay bench` and `voxrelay bench media`
//! share their flags' shapes (a list of call counts, positive numbers, a running
//! server's URL and process, a fixed port for a fake), so each is read here once.

use super::BenchArgsError;

/// The flags still to read; each reader names its flag in the error it returns.
pub(crate) struct Flags<'a> {
    args: std::slice::Iter<'a, String>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(args: &'a [String]) -> Self {
        Self { args: args.iter() }
    }

    /// The next flag, if any.
    pub(crate) fn next_flag(&mut self) -> Option<&'a str> {
        self.args.next().map(String::as_str)
    }

    /// The value after `flag`.
    pub(crate) fn value(&mut self, flag: &str) -> Result<String, BenchArgsError> {
        self.args
            .next()
            .cloned()
            .ok_or_else(|| BenchArgsError::MissingValue(flag.to_string()))
    }

    /// A number above zero.
    pub(crate) fn positive(
        &mut self,
        flag: &str,
        what: &'static str,
    ) -> Result<u64, BenchArgsError> {
        let v = self.value(flag)?;
        positive(&v).ok_or_else(|| bad(flag, what, &v))
    }

    /// Call counts: `200` or `50,200,1000`.
    pub(crate) fn calls(&mut self, flag: &str) -> Result<Vec<usize>, BenchArgsError> {
        let v = self.value(flag)?;
        v.split(',')
            .map(|n| positive(n).map(|n| n as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(flag, "positive numbers", &v))
    }

    /// A running server's `ws://` URL.
    pub(crate) fn ws_url(&mut self, flag: &str) -> Result<String, BenchArgsError> {
        let v = self.value(flag)?;
        if v.starts_with("ws://") {
            Ok(v)
        } else {
            Err(bad(flag, "a ws:// URL", &v))
        }
    }

    /// A TCP port (0: any free one).
    pub(crate) fn port(&mut self, flag: &str) -> Result<u16, BenchArgsError> {
        let v = self.value(flag)?;
        v.trim().parse().map_err(|_| bad(flag, "a port number", &v))
    }
}

/// `--target` and `--pid` come together or not at all.
pub(crate) fn target_with_pid(
    target: &Option<String>,
    pid: Option<u32>,
) -> Result<(), BenchArgsError> {
    if target.is_some() == pid.is_some() {
        return Ok(());
    }
    Err(bad(
        "--target",
        "--pid with it (and --pid only with --target)",
        target.as_deref().unwrap_or_default(),
    ))
}

fn positive(v: &str) -> Option<u64> {
    v.trim().parse::<u64>().ok().filter(|n| *n > 0)
}

pub(crate) fn bad(flag: &str, what: &'static str, value: &str) -> BenchArgsError {
    BenchArgsError::Bad {
        flag: flag.to_string(),
        what,
        value: value.to_string(),
    }
}
