//! The outbound fetch of `serve --allow-remote-images` and its public-address guard: by
//! default an image is fetched only from a public address ([`is_public`]) that is not this
//! machine's own (`fetchable`), checked on the address written in the URL and in each
//! redirect (`refused_literal`) and on every name's answers (the `PublicOnly` resolver), so
//! a name cannot lead to loopback, a private network or a metadata service.

use super::RemoteImages;
use crate::media;

pub(super) async fn fetch(url: &str, from: RemoteImages) -> Result<Vec<u8>, String> {
    const REDIRECTS: usize = 3;
    let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    let builder = if from == RemoteImages::Any {
        builder.redirect(reqwest::redirect::Policy::limited(REDIRECTS))
    } else {
        let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        if let Some(why) = refused_literal(&parsed) {
            return Err(why);
        }
        // A name is resolved by `PublicOnly` (on every connection, so a redirect or a name
        // that resolves elsewhere the second time is held to it too); an address written in
        // the URL is not resolved, so each hop's is checked here. A proxy would make the
        // connection to itself, not to the host checked: none is used.
        builder
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() > REDIRECTS {
                    return attempt.error(format!("more than {REDIRECTS} redirects"));
                }
                match refused_literal(attempt.url()) {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                }
            }))
    };
    let client = builder.build().map_err(|e| e.to_string())?;
    let mut resp = client.get(url).send().await.map_err(|e| chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > media::IMAGE_MAX_BYTES {
            return Err(format!("it is over {} bytes", media::IMAGE_MAX_BYTES));
        }
    }
    Ok(out)
}

/// An error and its sources, `: `-joined (reqwest's own text hides why a connection failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !out.contains(&t) {
            out = format!("{out}: {t}");
        }
        next = s.source();
    }
    out
}

const ANY_HINT: &str = "start serve with --allow-remote-images=any to fetch from any address";

/// Why a URL whose host is an IP address is not fetched under [`RemoteImages::Public`].
fn refused_literal(url: &reqwest::Url) -> Option<String> {
    // The URL parser reads an IPv4 host in any of its forms (`2130706433`, `0x7f.1`, `127.1`)
    // as the address it means and writes it dotted, an IPv6 one in brackets; any other host
    // is a name, which `PublicOnly` resolves and checks.
    let host = url.host_str()?;
    let ip: std::net::IpAddr = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?.parse().ok()?,
        None => host.parse().ok()?,
    };
    (!fetchable(ip)).then(|| format!("{ip} is not a public address ({ANY_HINT})"))
}

/// May an image be fetched from `ip` under [`RemoteImages::Public`]? A public address
/// ([`is_public`]) that is not one of this machine's own (a service listening on all
/// addresses is reachable through the machine's public one too).
/// An IPv6 address that embeds an IPv4 one is checked under both (a NAT64 or 6to4 gateway
/// leads to the IPv4 one). A public address that reaches this machine through a 1:1 NAT
/// (a cloud VM's public address, on no interface of it) is not recognised.
fn fetchable(ip: std::net::IpAddr) -> bool {
    let embedded = match ip {
        std::net::IpAddr::V6(a) => embedded_v4(a),
        std::net::IpAddr::V4(_) => None,
    };
    is_public(ip) && !is_this_machine(ip) && !embedded.is_some_and(|v4| is_this_machine(v4.into()))
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped (::ffff:0:0/96), IPv4-translated
/// (::ffff:0:0:0/96), NAT64 (64:ff9b::/96), 6to4 (2002::/16).
fn embedded_v4(a: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = a.segments();
    let v4 = |hi: u16, lo: u16| {
        std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
    };
    if let Some(m) = a.to_ipv4_mapped() {
        return Some(m);
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(v4(s[6], s[7]));
    }
    (s[0] == 0x2002).then(|| v4(s[1], s[2]))
}

/// Is `ip` an address of this machine? Binding a socket to an address succeeds only for a
/// local one (with `net.ipv4.ip_nonlocal_bind` set, every address seems local: then no
/// address is fetched from, the safe way to be wrong).
fn is_this_machine(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind(std::net::SocketAddr::new(ip, 0)).is_ok()
}

/// reqwest's resolver under [`RemoteImages::Public`]: the system's answer (getaddrinfo),
/// without the addresses [`fetchable`] refuses; an error when none is left. The error says
/// the same whether the name has no address or only refused ones, and names none of them
/// (what internal names exist and where they lead is not the client's business): the
/// server's log (stderr) has them.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let refused = |why: String| -> Box<dyn std::error::Error + Send + Sync> {
                crate::note!("mlxfs serve: an image URL's host {host}: {why}");
                format!("{host} has no public address ({ANY_HINT})").into()
            };
            let all: Vec<std::net::SocketAddr> =
                match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(all) => all.collect(),
                    Err(e) => return Err(refused(format!("cannot be resolved: {e}"))),
                };
            let public: Vec<std::net::SocketAddr> =
                all.iter().copied().filter(|a| fetchable(a.ip())).collect();
            if public.is_empty() {
                let seen: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
                return Err(refused(format!(
                    "resolves to no public address ({})",
                    seen.join(", ")
                )));
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Is `ip` an address of the public internet? Not this machine, not a private or shared
/// network, not link-local (where cloud metadata services answer, 169.254.169.254), and none
/// of the other special-purpose blocks of the IANA registries (RFC 6890 and its updates):
/// unspecified, "this network" (0/8), shared address space (100.64/10, RFC 6598), IETF
/// protocol assignments (192.0.0/24), documentation, the 6to4 relay anycast (192.88.99/24),
/// benchmarking (198.18/15), reserved (240/4), broadcast, multicast, and Azure's host
/// service (168.63.129.16, a public address that answers inside every Azure VM); for IPv6
/// also unique-local (fc00::/7), link- and site-local, documentation (2001:db8::/32,
/// 3fff::/20), discard-only (100::/64), the IETF protocol assignments 2001::/23 (Teredo,
/// benchmarking, ORCHID), local-use NAT64 (64:ff9b:1::/48, RFC 8215: it may lead to private
/// IPv4 networks), SRv6 SIDs (5f00::/16) and the rest of ::/96. An address that embeds an
/// IPv4 one (IPv4-mapped ::ffff:0:0/96, IPv4-translated ::ffff:0:0:0/96, NAT64
/// 64:ff9b::/96, 6to4 2002::/16) is judged by it. (Rust's `IpAddr::is_global` is not stable
/// yet.)
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && o[1] & 0xc0 == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 192 && o[1] == 88 && o[2] == 99)
                || (o[0] == 198 && o[1] & 0xfe == 18)
                || o == [168, 63, 129, 16]
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_v4(a) {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(s[..6] == [0; 6] // ::, ::1 and the deprecated IPv4-compatible ::/96
                || a.is_multicast()
                || s[0] & 0xfe00 == 0xfc00
                || s[0] & 0xffc0 == 0xfe80
                || s[0] & 0xffc0 == 0xfec0
                || s[..4] == [0x100, 0, 0, 0]
                || (s[0] == 0x2001 && s[1] < 0x200)
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x3fff && s[1] < 0x1000)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || s[0] == 0x5f00)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        let public = |t: &str| is_public(t.parse().unwrap());
        for t in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(t), "{t} is public");
        }
        for t in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "203.0.113.7",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "192.88.99.1",
            "168.63.129.16",
            "::ffff:0:a00:1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::808:808",
            "100::1",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
        ] {
            assert!(!public(t), "{t} is not public");
        }
        // Just outside the blocks.
        for t in [
            "192.88.100.1",
            "168.63.129.17",
            "2001:200::1",
            "3fff:1000::1",
        ] {
            assert!(public(t), "{t} is public");
        }
    }

    /// This machine's own addresses are refused even when public ones: a service listening
    /// on all of them is reachable through each.
    #[test]
    fn this_machine_is_not_fetched_from() {
        assert!(is_this_machine("127.0.0.1".parse().unwrap()));
        assert!(!fetchable("127.0.0.1".parse().unwrap()));
        for (v6, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:0:7f00:1", "127.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("2002:7f00:1::1", "127.0.0.1"),
        ] {
            let inner = embedded_v4(v6.parse().unwrap());
            assert_eq!(inner, Some(v4.parse().unwrap()), "{v6}");
            assert!(is_this_machine(inner.unwrap().into()), "{v6}");
        }
        assert_eq!(embedded_v4("2606:4700::1111".parse().unwrap()), None);
        // A public address of this machine's (where it has one), also in its NAT64 and 6to4
        // forms.
        if let Some(mine) = own_public_v4() {
            let [a, b, c, d] = mine.octets();
            let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            for ip in [
                std::net::IpAddr::V4(mine),
                format!("64:ff9b::{hi:x}:{lo:x}").parse().unwrap(),
                format!("2002:{hi:x}:{lo:x}::1").parse().unwrap(),
            ] {
                assert!(!fetchable(ip), "{ip} is this machine's");
            }
        }
        // 192.0.2.0/24 is documentation: no machine has it (unless nonlocal binds are on,
        // which makes every address look like this machine's: nothing is fetched then).
        let binds_anything = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
            .is_ok_and(|v| v.trim() == "1");
        if !binds_anything {
            assert!(!is_this_machine("192.0.2.1".parse().unwrap()));
        }
    }

    /// A public IPv4 address of one of this machine's interfaces, if it has one.
    fn own_public_v4() -> Option<std::net::Ipv4Addr> {
        let text = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
        let mut last: Option<std::net::Ipv4Addr> = None;
        for line in text.lines() {
            let t = line.trim_start_matches([' ', '|', '-', '+']);
            if let Ok(a) = t.trim().parse::<std::net::Ipv4Addr>() {
                last = Some(a);
            } else if t.contains("/32 host LOCAL")
                && let Some(a) = last
                && is_public(a.into())
            {
                return Some(a);
            }
        }
        None
    }

    #[test]
    fn literal_hosts_are_checked() {
        let refused = |u: &str| refused_literal(&reqwest::Url::parse(u).unwrap());
        assert!(refused("http://127.0.0.1:8080/a.png").is_some());
        assert!(refused("http://[::1]/a.png").is_some());
        assert!(refused("http://169.254.169.254/latest/meta-data").is_some());
        // The URL parser's own forms of an address: decimal, hex, short.
        assert!(refused("http://2130706433/a.png").is_some());
        assert!(refused("http://0x7f.1/a.png").is_some());
        assert!(refused("http://127.1/a.png").is_some());
        assert!(refused("http://8.8.8.8/a.png").is_none());
        // Names are the resolver's to judge.
        assert!(refused("http://localhost/a.png").is_none());
    }
}
