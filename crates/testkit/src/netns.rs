//! Hosts in Linux network namespaces for partition tests: a [`Lab`] is a bridge in the root
//! namespace with a private /24 (the test process reaches every host through it), and each
//! [`Host`] a namespace with its own loopback and one veth on the bridge. Links are cut by the
//! kernel, never by a test hook: [`Lab::cut`] drops one host's packets to and from another with
//! an nftables set in the host's namespace, [`Lab::isolate`] takes the host's link down.
//! Everything is removed when the lab drops; labs left by a killed test process are removed by
//! the next one. Needs root, `ip` (iproute2) and `nft` (nftables); [`Lab::start_or_skip`]
//! prints why it skips otherwise (a panic under `CI=true`).

use std::process::Command;

use crate::Error;

/// Where a process runs: a lab host (its namespace and address) or the test machine's own
/// loopback ([`Host::loopback`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// The namespace (`None`: the root namespace).
    pub netns: Option<String>,
    /// The address it serves on and is reached at.
    pub ip: String,
}

impl Host {
    /// The root namespace on 127.0.0.1 (what tests without a lab use).
    pub fn loopback() -> Host {
        Host {
            name: "loopback".into(),
            netns: None,
            ip: "127.0.0.1".into(),
        }
    }

    /// `program` to run on this host (`ip netns exec NS program` inside a namespace; `ip`
    /// execs it, so the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
        }
    }
}

/// A bridge and the namespaces on it, removed on drop.
pub struct Lab {
    tag: String,
    bridge: String,
    /// The first three octets of the lab's /24.
    net: String,
    hosts: Vec<Host>,
}

/// Runs a command of the lab's plumbing; its stderr on failure.
fn run(program: &str, args: &[&str]) -> crate::Result<()> {
    let o = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Setup(format!("{program} {}: {e}", args.join(" "))))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )))
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The prefix of every lab name: `av` and the test process's pid.
const PREFIX: &str = "avlab";

impl Lab {
    /// A lab, or `None` after a skip notice when this machine cannot make one (not root, no
    /// `ip` or `nft`, namespaces refused); under `CI=true` that is a panic.
    pub fn start_or_skip(test: &str) -> Option<Lab> {
        Lab::start()
            .map_err(|e| {
                crate::tool::skip_or_fail(&format!(
                    "{test}: cannot build network namespaces here ({e}); run as root with iproute2 and nftables (apt install iproute2 nftables)"
                ))
            })
            .ok()
    }

    /// The bridge with the first free 10.250-253.x.0/24 (the root namespace's routes decide
    /// what is free). Without root, `ip` fails and its error says so.
    pub fn start() -> crate::Result<Lab> {
        run("nft", &["--version"])?;
        remove_stale();
        let pid = std::process::id();
        let routes = output("ip", &["-4", "route"]);
        let net = (0..1024u32)
            .map(|i| (pid + i) % 1024)
            .map(|n| format!("10.{}.{}", 250 + n / 256, n % 256))
            .find(|net| !routes.contains(&format!("{net}.")))
            .ok_or_else(|| Error::Setup("no free 10.250-253.x.0/24".into()))?;
        let tag = format!("{PREFIX}{pid}");
        let bridge = format!("{tag}b");
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        let lab = Lab {
            tag,
            bridge,
            net,
            hosts: Vec::new(),
        };
        run(
            "ip",
            &["addr", "add", &format!("{}.1/24", lab.net), "dev", &lab.bridge],
        )?;
        run("ip", &["link", "set", &lab.bridge, "up"])?;
        Ok(lab)
    }

    /// A new host `name`: a namespace with loopback up, a veth on the bridge at the next
    /// address, and the nftables set [`Lab::cut`] fills.
    pub fn host(&mut self, name: &str) -> crate::Result<Host> {
        let i = self.hosts.len() + 2;
        let ns = format!("{}-{name}", self.tag);
        let outer = format!("{}h{i}", self.tag);
        let inner = format!("{}i{i}", self.tag);
        let ip = format!("{}.{i}", self.net);
        run("ip", &["netns", "add", &ns])?;
        let host = Host {
            name: name.into(),
            netns: Some(ns.clone()),
            ip: ip.clone(),
        };
        self.hosts.push(host.clone());
        run(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ],
        )?;
        run("ip", &["link", "set", &outer, "master", &self.bridge, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        exec(&["ip", "link", "set", "lo", "up"])?;
        exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &inner])?;
        exec(&["ip", "link", "set", &inner, "up"])?;
        let rules = "table inet lab {
  set cut { type ipv4_addr; }
  chain input { type filter hook input priority 0; ip saddr @cut drop; }
  chain output { type filter hook output priority 0; ip daddr @cut drop; }
}";
        exec(&["nft", rules])?;
        Ok(host)
    }

    /// The lab's hosts, in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Drops every packet between `a` and each of `others` (both directions, in `a`'s
    /// namespace): connections hang, nothing is refused.
    pub fn cut(&self, a: &Host, others: &[&Host]) -> crate::Result<()> {
        self.cut_set(a, others, "add")
    }

    /// Undoes [`Lab::cut`].
    pub fn heal(&self, a: &Host, others: &[&Host]) -> crate::Result<()> {
        self.cut_set(a, others, "delete")
    }

    fn cut_set(&self, a: &Host, others: &[&Host], verb: &str) -> crate::Result<()> {
        let ns = a.netns.as_deref().expect("a lab host");
        let ips: Vec<&str> = others.iter().map(|h| h.ip.as_str()).collect();
        let elements = format!("{{ {} }}", ips.join(", "));
        run(
            "ip",
            &[
                "netns", "exec", ns, "nft", verb, "element", "inet", "lab", "cut", &elements,
            ],
        )
    }

    /// Takes `h`'s link to the bridge down: it reaches no other host and none reaches it (the
    /// test process neither), as when a machine's network fails.
    pub fn isolate(&self, h: &Host) -> crate::Result<()> {
        run("ip", &["link", "set", &self.outer(h), "down"])
    }

    /// Brings `h`'s link up again.
    pub fn rejoin(&self, h: &Host) -> crate::Result<()> {
        run("ip", &["link", "set", &self.outer(h), "up"])
    }

    fn outer(&self, h: &Host) -> String {
        let i = self
            .hosts
            .iter()
            .position(|x| x == h)
            .expect("a host of this lab")
            + 2;
        format!("{}h{i}", self.tag)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        remove(&self.tag);
    }
}

/// Removes the veths, namespaces and bridge of lab `tag`. The veths go first and by name: a
/// deleted namespace's veth pair can outlive it in the root namespace.
fn remove(tag: &str) {
    for line in output("ip", &["-o", "link", "show"]).lines() {
        let name = line.split_whitespace().nth(1).unwrap_or_default();
        let name = name.trim_end_matches(':').split('@').next().unwrap_or_default();
        if name.starts_with(&format!("{tag}h")) {
            let _ = run("ip", &["link", "delete", name]);
        }
    }
    for line in output("ip", &["netns", "list"]).lines() {
        let ns = line.split_whitespace().next().unwrap_or_default();
        if ns.starts_with(&format!("{tag}-")) {
            let _ = run("ip", &["netns", "delete", ns]);
        }
    }
    let _ = run("ip", &["link", "delete", &format!("{tag}b")]);
}

/// Removes the labs of test processes that no longer run (killed before their drop).
fn remove_stale() {
    let names = output("ip", &["netns", "list"]) + &output("ip", &["-o", "link", "show"]);
    let mut stale = std::collections::BTreeSet::new();
    for word in names.split_whitespace() {
        let Some(rest) = word.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(pid) = digits.parse::<u32>()
            && !crate::process::alive(pid)
        {
            stale.insert(format!("{PREFIX}{digits}"));
        }
    }
    for tag in stale {
        remove(&tag);
    }
}
