//! The service manager's notification socket (systemd's `sd_notify(3)`
//! protocol, spoken directly: one datagram of `KEY=VALUE` lines to the
//! AF_UNIX socket named by `$NOTIFY_SOCKET`).
//!
//! This module owns that socket and the watchdog's schedule. The daemon
//! says `READY=1` once forwarding is up (sockets bound, trunk open, the
//! fast path attached, an earlier run's tunnels taken back), `WATCHDOG=1`
//! from its event loop every half `$WATCHDOG_USEC` (so a loop that stops
//! turning stops the pings and the service manager restarts tunterm), and
//! `STOPPING=1` when it leaves. Without `$NOTIFY_SOCKET` (not started by
//! systemd with `Type=notify`) every call does nothing.
//!
//! Sending never blocks the loop: the socket is non-blocking, and a
//! datagram the manager's queue has no room for is dropped and counted.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// Where and how often to notify, as the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// `$NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    pub socket: Vec<u8>,
    /// Half of `$WATCHDOG_USEC` (sd_watchdog_enabled(3) advises pinging
    /// twice per period), when the watchdog is on for this process.
    pub watchdog_every: Option<Duration>,
}

impl NotifySettings {
    /// The settings from the service manager's variables (`None`: no
    /// `NOTIFY_SOCKET`, nothing to notify). `WATCHDOG_PID`, when set, must
    /// be `pid` (the variables may have been inherited from a parent that
    /// was the service); a watchdog that cannot be read is an error the
    /// caller logs, not a reason to refuse to start.
    pub fn parse(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> (Option<Self>, Option<String>) {
        let Some(socket) = notify_socket.filter(|s| !s.is_empty()) else {
            return (None, None);
        };
        let socket = socket.as_bytes().to_vec();
        if socket[0] != b'/' && socket[0] != b'@' {
            let why = format!(
                "NOTIFY_SOCKET={}: neither a path nor an @abstract name",
                String::from_utf8_lossy(&socket)
            );
            return (None, Some(why));
        }
        let mine = match watchdog_pid {
            None => true,
            Some(p) => p.trim().parse::<u32>().is_ok_and(|p| p == pid),
        };
        let (watchdog_every, why) = match watchdog_usec.filter(|_| mine) {
            None => (None, None),
            Some(u) => match u.trim().parse::<u64>() {
                Ok(us) if us > 0 => (Some(Duration::from_micros(us) / 2), None),
                _ => (
                    None,
                    Some(format!(
                        "WATCHDOG_USEC={u}: not a number of microseconds; no watchdog pings"
                    )),
                ),
            },
        };
        (
            Some(NotifySettings {
                socket,
                watchdog_every,
            }),
            why,
        )
    }

    /// The settings of this process's environment.
    pub fn from_env() -> (Option<Self>, Option<String>) {
        let sock = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::parse(
            sock.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }
}

/// What was sent and what was lost (for the log at exit and the tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifyCounters {
    pub sent: u64,
    pub watchdog_pings: u64,
    /// Datagrams the manager did not take (queue full, socket gone).
    pub send_errors: u64,
}

/// The notification socket of a daemon started by a service manager, or
/// nothing.
#[derive(Debug)]
pub struct Notifier {
    link: Option<(UnixDatagram, SocketAddr)>,
    watchdog_every: Option<Duration>,
    next_ping: Option<Instant>,
    pub counters: NotifyCounters,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier {
            link: None,
            watchdog_every: None,
            next_ping: None,
            counters: NotifyCounters::default(),
        }
    }

    /// The notifier `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` describe (a
    /// warning is logged for settings it cannot use).
    pub fn from_env(now: Instant) -> Self {
        let (settings, why) = NotifySettings::from_env();
        if let Some(why) = why {
            warn!("{why}");
        }
        match settings {
            None => Self::disabled(),
            Some(s) => Self::new(&s, now).unwrap_or_else(|e| {
                warn!(error = %e, "the service manager's NOTIFY_SOCKET cannot be used: not notifying");
                Self::disabled()
            }),
        }
    }

    /// A notifier sending to `settings.socket`; the first watchdog ping is
    /// due at once (the manager's period starts before we run).
    pub fn new(settings: &NotifySettings, now: Instant) -> io::Result<Self> {
        let addr = match settings.socket.split_first() {
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            _ => SocketAddr::from_pathname(OsStr::from_bytes(&settings.socket))?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            link: Some((sock, addr)),
            watchdog_every: settings.watchdog_every,
            next_ping: settings.watchdog_every.map(|_| now),
            counters: NotifyCounters::default(),
        })
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.link.is_some()
    }

    /// The watchdog period's half, when the watchdog is on.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn send(&mut self, message: &str) {
        let Some((sock, addr)) = &self.link else {
            return;
        };
        match sock.send_to_addr(message.as_bytes(), addr) {
            Ok(_) => self.counters.sent += 1,
            Err(e) => {
                self.counters.send_errors += 1;
                // Once per power of two: a manager that went away must
                // not fill the log every watchdog period.
                if self.counters.send_errors.is_power_of_two() {
                    warn!(error = %e, errors = self.counters.send_errors, "notifying the service manager failed");
                }
            }
        }
    }

    /// Forwarding is up: `READY=1`, with a one-line status.
    pub fn ready(&mut self, status: &str) {
        let status = status.replace('\n', " ");
        self.send(&format!("READY=1\nSTATUS={status}"));
        debug!("told the service manager READY=1");
    }

    /// tunterm is leaving (`status` says how).
    pub fn stopping(&mut self, status: &str) {
        let status = status.replace('\n', " ");
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// When the next watchdog ping is due (`None`: no watchdog): the loop
    /// must wake by then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Call once per turn of the event loop: sends `WATCHDOG=1` when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (Some(due), Some(every)) = (self.next_ping, self.watchdog_every) else {
            return;
        };
        if now < due {
            return;
        }
        self.send("WATCHDOG=1");
        self.counters.watchdog_pings += 1;
        self.next_ping = Some(now + every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        sock: Option<&str>,
        usec: Option<&str>,
        pid: Option<&str>,
    ) -> (Option<NotifySettings>, Option<String>) {
        NotifySettings::parse(sock.map(OsStr::new), usec, pid, 42)
    }

    #[test]
    fn the_environment_says_where_and_how_often() {
        assert_eq!(parse(None, Some("1000000"), None), (None, None));
        assert_eq!(parse(Some(""), None, None), (None, None));
        let (s, why) = parse(Some("/run/systemd/notify"), None, None);
        assert_eq!(why, None);
        let s = s.unwrap();
        assert_eq!(
            (s.socket.as_slice(), s.watchdog_every),
            (&b"/run/systemd/notify"[..], None)
        );
        // Half the period, for this process only.
        let (s, _) = parse(Some("@sd"), Some("10000000"), Some("42"));
        assert_eq!(s.unwrap().watchdog_every, Some(Duration::from_secs(5)));
        let (s, _) = parse(Some("@sd"), Some("10000000"), Some("43"));
        assert_eq!(
            s.unwrap().watchdog_every,
            None,
            "another process's watchdog"
        );
        let (s, why) = parse(Some("@sd"), Some("ten"), None);
        assert_eq!(s.unwrap().watchdog_every, None);
        assert!(why.unwrap().contains("WATCHDOG_USEC=ten"));
        let (s, why) = parse(Some("relative/path"), None, None);
        assert!(s.is_none());
        assert!(why.unwrap().contains("neither a path"));
    }

    #[test]
    fn pings_go_out_every_half_period_and_only_then() {
        let dir = std::env::temp_dir().join(format!("tunterm-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let settings = NotifySettings {
            socket: path.as_os_str().as_bytes().to_vec(),
            watchdog_every: Some(Duration::from_secs(2)),
        };
        let t0 = Instant::now();
        let mut n = Notifier::new(&settings, t0).unwrap();
        let mut buf = [0u8; 256];
        let mut recv = || {
            manager
                .recv(&mut buf)
                .ok()
                .map(|len| String::from_utf8_lossy(&buf[..len]).into_owned())
        };
        n.ready("forwarding");
        let ready = recv().unwrap();
        assert_eq!(ready, "READY=1\nSTATUS=forwarding");
        assert_eq!(n.poll_timeout(), Some(t0));
        n.handle_timeout(t0);
        assert_eq!(recv().as_deref(), Some("WATCHDOG=1"));
        assert_eq!(n.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        n.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(recv(), None, "not due yet");
        n.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(recv().as_deref(), Some("WATCHDOG=1"));
        assert_eq!(n.counters.watchdog_pings, 2);
        // The manager gone: counted, not fatal.
        drop(manager);
        std::fs::remove_file(&path).unwrap();
        n.stopping("bye");
        assert_eq!(n.counters.send_errors, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_manager_nothing_is_sent() {
        let mut n = Notifier::disabled();
        n.ready("x");
        n.handle_timeout(Instant::now());
        assert_eq!(
            (n.enabled(), n.poll_timeout(), n.counters),
            (false, None, NotifyCounters::default())
        );
    }
}
