//! Outbound targets: URL parsing, host normalisation, allowlist matching and SSRF address
//! classes.
//!
//! The proxy calls out on behalf of untrusted agents, so a target URL is judged before any
//! secret is read, in three steps that other crates chain together:
//!
//! 1. [`Target::parse`] parses the URL with the `url` crate, which follows the WHATWG URL
//!    standard that browsers use. Every spelling of an IPv4 address that a resolver or a
//!    browser would accept (`0x7f.1`, `2130706433`, `0177.0.0.1`, `127.1`) therefore comes
//!    out as the literal it really is, and international names come out as punycode. On
//!    top of that we refuse anything but `http`/`https`, refuse userinfo (even an empty
//!    `@`), and strip one trailing dot so that `example.com.` and `example.com` are one host.
//! 2. [`host_allowed`] compares the normalised host with allowlist entries that went through
//!    [`normalize_host`], which applies the very same normalisation. Matching is exact string
//!    equality: there is no suffix or wildcard matching, because `api.stripe.com` must never
//!    admit `evil-api.stripe.com` or `api.stripe.com.evil.com`.
//! 3. After DNS resolution the caller runs [`classify`] on every resolved address and
//!    refuses the call unless all of them are [`AddressClass::Public`]. IPv6 forms that carry
//!    an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that IPv4 address, so
//!    `::ffff:169.254.169.254` is as link-local as `169.254.169.254`.
//!
//! Error messages and the [`fmt::Debug`] output of a [`Target`] never contain the query
//! string, since a secret may have been injected there; at most `scheme://host:port/path`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Longest domain name DNS can carry, in its dotted text form.
const MAX_DOMAIN_LEN: usize = 253;

/// Longest single label DNS can carry.
const MAX_LABEL_LEN: usize = 63;

/// Why a target or allowlist entry was refused. Messages are lowercase and never include the
/// query string of the URL (it may carry an injected secret): at most
/// `scheme://host:port/path`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// The text is not a URL at all; the payload says why.
    #[error("malformed target url: {0}")]
    Malformed(String),
    /// The scheme is not `http` or `https`; the payload is the scheme.
    #[error("unsupported scheme '{0}': only http and https are allowed")]
    UnsupportedScheme(String),
    /// The URL names no host.
    #[error("target url has no host")]
    MissingHost,
    /// The URL carries `user:password@` (possibly empty), which could smuggle credentials.
    #[error("target url must not contain userinfo (user:password@)")]
    Userinfo,
    /// The host, or an allowlist entry, is not a valid host name; the payload says why.
    #[error("invalid host: {0}")]
    InvalidHost(String),
}

/// The host of a target after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// A DNS name: lowercase ASCII (punycode), without a trailing dot.
    Domain(String),
    /// An IP literal, whatever spelling the URL used for it.
    Ip(IpAddr),
}

/// Renders the host the way the allowlist and audit log write it: the domain, or the
/// canonical IP text (IPv6 without brackets).
impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Domain(domain) => f.write_str(domain),
            TargetHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A parsed, normalised outbound target.
#[derive(Clone)]
pub struct Target {
    url: Url,
    host: TargetHost,
    port: u16,
}

/// Hand-written rather than derived: `Url`'s own `Debug` prints the query, which may hold an
/// injected secret, and a `{:?}` in a log line must not leak it.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.display_without_query())
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl Target {
    /// Parses and normalises a target URL, refusing non-HTTP schemes, userinfo and hosts
    /// that are empty or invalid.
    pub fn parse(raw: &str) -> Result<Target, TargetError> {
        let mut url = Url::parse(raw).map_err(|e| TargetError::Malformed(lowercase_error(e)))?;
        check_scheme(&url)?;
        check_no_userinfo(raw, &url)?;
        let host = host_of(&url)?;
        strip_trailing_dot(&mut url, &host)?;
        let port = port_of(&url)?;
        Ok(Target { url, host, port })
    }

    /// The normalised URL: host normalised, trailing dot removed, query kept.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The normalised host.
    pub fn host(&self) -> &TargetHost {
        &self.host
    }

    /// The port to connect to: explicit, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The host as written in the allowlist / audit log: domain, or IP text (IPv6 without
    /// brackets).
    pub fn domain(&self) -> String {
        self.host.to_string()
    }

    /// `scheme://host[:port]/path` with no query and no fragment: safe for logs and error
    /// messages.
    pub fn display_without_query(&self) -> String {
        // `host_str` keeps the brackets of an IPv6 literal, as a URL needs them; `port` is
        // `None` when it equals the scheme default, which the `url` crate drops.
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{host}{port}{}", self.url.scheme(), self.url.path())
    }
}

/// Refuses every scheme but `http` and `https`.
fn check_scheme(url: &Url) -> Result<(), TargetError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(TargetError::UnsupportedScheme(other.to_string())),
    }
}

/// Refuses userinfo, including the empty `https://@host/` that the parsed URL no longer
/// shows: the raw authority is checked for an `@` as well.
fn check_no_userinfo(raw: &str, url: &Url) -> Result<(), TargetError> {
    let parsed_has_userinfo = !url.username().is_empty() || url.password().is_some();
    if parsed_has_userinfo || raw_authority(raw).contains('@') {
        return Err(TargetError::Userinfo);
    }
    Ok(())
}

/// The authority part of an http(s) URL as the WHATWG parser delimits it: input trimmed of
/// controls and spaces, tabs and newlines removed, every `/` or `\` after the scheme skipped,
/// up to the first `/`, `\`, `?` or `#`. Only called once the scheme is known to be special,
/// which is what makes `\` a delimiter and the first `:` the end of the scheme.
fn raw_authority(raw: &str) -> String {
    let cleaned: String = raw
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let after_scheme = cleaned.split_once(':').map_or("", |(_, rest)| rest);
    let authority = after_scheme.trim_start_matches(['/', '\\']);
    let end = authority.find(['/', '\\', '?', '#']).unwrap_or(authority.len());
    authority[..end].to_string()
}

/// The normalised host of a parsed URL: IP literals as addresses, domains validated and
/// stripped of one trailing dot.
fn host_of(url: &Url) -> Result<TargetHost, TargetError> {
    match url.host() {
        None => Err(TargetError::MissingHost),
        Some(Host::Ipv4(v4)) => Ok(TargetHost::Ip(IpAddr::V4(v4))),
        Some(Host::Ipv6(v6)) => Ok(TargetHost::Ip(IpAddr::V6(v6))),
        Some(Host::Domain(domain)) => normalize_domain(domain).map(TargetHost::Domain),
    }
}

/// Strips one trailing dot from a domain the `url` crate has already lowercased and turned
/// into punycode, then checks that what is left is a usable DNS name.
fn normalize_domain(domain: &str) -> Result<String, TargetError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    validate_domain(domain)?;
    Ok(domain.to_string())
}

/// Checks DNS shape: not empty, within length limits, no empty label, and only letters,
/// digits, `-` and `_` (which also rules out wildcards such as `*`).
fn validate_domain(domain: &str) -> Result<(), TargetError> {
    if domain.is_empty() {
        return Err(TargetError::MissingHost);
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return Err(invalid_host("the name is longer than 253 characters"));
    }
    domain.split('.').try_for_each(validate_label)
}

/// Checks one label of a domain name.
fn validate_label(label: &str) -> Result<(), TargetError> {
    if label.is_empty() {
        return Err(invalid_host("the name has an empty label (a leading dot or '..')"));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(invalid_host("a label is longer than 63 characters"));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !label.chars().all(allowed) {
        return Err(invalid_host("the name holds a character not allowed in a dns name"));
    }
    Ok(())
}

/// Writes the stripped domain back into the URL, so that the URL the proxy connects to and
/// the host it checked are the same.
fn strip_trailing_dot(url: &mut Url, host: &TargetHost) -> Result<(), TargetError> {
    let TargetHost::Domain(domain) = host else {
        return Ok(());
    };
    if url.host_str() == Some(domain.as_str()) {
        return Ok(());
    }
    url.set_host(Some(domain)).map_err(|e| invalid_host(&lowercase_error(e)))
}

/// The explicit port, or the scheme default. Port 0 is refused: nothing listens there and
/// connecting to it means "any port" to some stacks.
fn port_of(url: &Url) -> Result<u16, TargetError> {
    let port = url.port().unwrap_or(if url.scheme() == "https" { 443 } else { 80 });
    if port == 0 {
        return Err(TargetError::Malformed("port 0 is not a usable target port".to_string()));
    }
    Ok(port)
}

/// The `url` crate's messages are lowercase except for names like "IPv4"; ours are all
/// lowercase. They never quote the input, so no query can leak through them.
fn lowercase_error(e: url::ParseError) -> String {
    e.to_string().to_lowercase()
}

/// Shorthand for an [`TargetError::InvalidHost`] with a fixed reason.
fn invalid_host(why: &str) -> TargetError {
    TargetError::InvalidHost(why.to_string())
}

/// Normalises an allowlist entry the same way as a target host: trim, lowercase, IDNA to
/// punycode, one trailing dot removed, IP literals (incl. decimal/octal/hex IPv4 forms and
/// `[v6]`) canonicalised. Refuses entries containing a scheme, path, port, userinfo,
/// wildcard or spaces with an [`TargetError::InvalidHost`] that says what is wrong.
pub fn normalize_host(entry: &str) -> Result<String, TargetError> {
    let entry = entry.trim();
    check_entry_shape(entry)?;
    if let Some(v6) = ipv6_entry(entry)? {
        return Ok(v6.to_string());
    }
    if entry.contains(':') {
        return Err(colon_error(entry));
    }
    host_of_entry(entry).map(|host| host.to_string())
}

/// Refuses the things people paste into an allowlist that are not a bare host, each with its
/// own message so that the user knows what to remove.
fn check_entry_shape(entry: &str) -> Result<(), TargetError> {
    let why = if entry.is_empty() {
        "the allowlist entry is empty"
    } else if entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "the allowlist entry contains spaces or control characters"
    } else if entry.contains("://") {
        "the allowlist entry contains a scheme: write the host only, e.g. api.example.com"
    } else if entry.contains('@') {
        "the allowlist entry contains userinfo (user@): write the host only"
    } else if entry.contains(['/', '\\', '?', '#']) {
        "the allowlist entry contains a path, query or fragment: write the host only"
    } else if entry.contains('*') {
        "wildcards are not supported: entries match one host exactly, list each host"
    } else if entry.starts_with('.') {
        "a leading dot is not supported: entries match one host exactly, list each host"
    } else {
        return Ok(());
    };
    Err(invalid_host(why))
}

/// An IPv6 literal entry, bare (`::1`) or bracketed (`[::1]`); `None` if the entry is not
/// meant as one.
fn ipv6_entry(entry: &str) -> Result<Option<Ipv6Addr>, TargetError> {
    if let Ok(v6) = entry.parse::<Ipv6Addr>() {
        return Ok(Some(v6));
    }
    let Some(inner) = entry.strip_prefix('[') else {
        return Ok(None);
    };
    match inner.strip_suffix(']') {
        Some(literal) => literal
            .parse::<Ipv6Addr>()
            .map(Some)
            .map_err(|_| invalid_host("the allowlist entry is not a valid ipv6 address")),
        None if inner.contains("]:") => Err(invalid_host("the allowlist entry contains a port")),
        None => Err(invalid_host("the allowlist entry has an unclosed '['")),
    }
}

/// Explains a colon in an entry that is not an IPv6 literal: a scheme without `//`, a
/// broken IPv6 address, or (most often) a port.
fn colon_error(entry: &str) -> TargetError {
    let before = entry.split(':').next().unwrap_or_default().to_ascii_lowercase();
    if before == "http" || before == "https" {
        invalid_host("the allowlist entry contains a scheme: write the host only")
    } else if entry.matches(':').count() > 1 {
        invalid_host("the allowlist entry is not a valid ipv6 address")
    } else {
        invalid_host("the allowlist entry contains a port: entries apply to every port")
    }
}

/// Runs a bare host through the same URL parser and normalisation as [`Target::parse`], so
/// that an entry and a target spelled alike always compare equal.
fn host_of_entry(entry: &str) -> Result<TargetHost, TargetError> {
    let url = Url::parse(&format!("http://{entry}/"))
        .map_err(|e| TargetError::InvalidHost(lowercase_error(e)))?;
    host_of(&url).map_err(|e| match e {
        TargetError::MissingHost => invalid_host("the allowlist entry has no host"),
        other => other,
    })
}

/// Exact match of a target host against normalised allowlist entries. There is deliberately
/// no suffix or wildcard matching; an entry that was not normalised simply fails to match.
pub fn host_allowed(host: &TargetHost, allowlist: &[String]) -> bool {
    let key = host.to_string();
    allowlist.contains(&key)
}

/// Class of an IP address for SSRF decisions. Serialises as the same snake_case text as
/// [`AddressClass::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// Globally routable; the only class a target may resolve to.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `169.254/16` (cloud metadata lives here), `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT, `100.64/10`.
    SharedCgnat,
    /// IPv6 unique local, `fc00::/7`.
    UniqueLocal,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0/8`, `::`: connecting there reaches the local host on many systems.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// Reserved, benchmarking, documentation and deprecated ranges.
    Reserved,
}

impl AddressClass {
    /// Whether a target resolving to this class may be called.
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    /// Stable snake_case name for audit logs and refusal messages.
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link_local",
            AddressClass::SharedCgnat => "shared_cgnat",
            AddressClass::UniqueLocal => "unique_local",
            AddressClass::Multicast => "multicast",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        }
    }
}

/// Prints [`AddressClass::name`].
impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An IPv4 network and the class of every address in it.
struct V4Range {
    net: u32,
    len: u32,
    class: AddressClass,
}

/// Builds a [`V4Range`] in a `const` table.
const fn v4(a: u8, b: u8, c: u8, d: u8, len: u32, class: AddressClass) -> V4Range {
    V4Range { net: Ipv4Addr::new(a, b, c, d).to_bits(), len, class }
}

/// Non-public IPv4 ranges. The first match wins, so the broadcast address comes before the
/// `240/4` block that contains it.
const V4_RANGES: &[V4Range] = &[
    v4(255, 255, 255, 255, 32, AddressClass::Broadcast),
    v4(0, 0, 0, 0, 8, AddressClass::Unspecified),
    v4(127, 0, 0, 0, 8, AddressClass::Loopback),
    v4(10, 0, 0, 0, 8, AddressClass::Private),
    v4(172, 16, 0, 0, 12, AddressClass::Private),
    v4(192, 168, 0, 0, 16, AddressClass::Private),
    v4(169, 254, 0, 0, 16, AddressClass::LinkLocal),
    v4(100, 64, 0, 0, 10, AddressClass::SharedCgnat),
    v4(224, 0, 0, 0, 4, AddressClass::Multicast),
    v4(240, 0, 0, 0, 4, AddressClass::Reserved),
    // IETF protocol assignments.
    v4(192, 0, 0, 0, 24, AddressClass::Reserved),
    // Benchmarking.
    v4(198, 18, 0, 0, 15, AddressClass::Reserved),
    // Documentation: TEST-NET-1, -2 and -3.
    v4(192, 0, 2, 0, 24, AddressClass::Reserved),
    v4(198, 51, 100, 0, 24, AddressClass::Reserved),
    v4(203, 0, 113, 0, 24, AddressClass::Reserved),
];

/// An IPv6 network and the class of every address in it.
struct V6Range {
    net: u128,
    len: u32,
    class: AddressClass,
}

/// Builds a [`V6Range`] from the first four segments of the network, in a `const` table.
const fn v6(segments: [u16; 4], len: u32, class: AddressClass) -> V6Range {
    let [a, b, c, d] = segments;
    V6Range { net: Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0).to_bits(), len, class }
}

/// Non-public IPv6 ranges that do not embed an IPv4 address.
const V6_RANGES: &[V6Range] = &[
    v6([0xfe80, 0, 0, 0], 10, AddressClass::LinkLocal),
    v6([0xfc00, 0, 0, 0], 7, AddressClass::UniqueLocal),
    v6([0xff00, 0, 0, 0], 8, AddressClass::Multicast),
    // Deprecated site-local.
    v6([0xfec0, 0, 0, 0], 10, AddressClass::Reserved),
    // Documentation.
    v6([0x2001, 0x0db8, 0, 0], 32, AddressClass::Reserved),
    // Discard-only.
    v6([0x0100, 0, 0, 0], 64, AddressClass::Reserved),
    // Local-use NAT64 (RFC 8215): translates to whatever IPv4 network the operator chose,
    // private ones included, and its embedding is not fixed, so it is refused outright.
    v6([0x0064, 0xff9b, 0x0001, 0], 48, AddressClass::Reserved),
];

/// Prefixes whose last 32 bits are an IPv4 address: mapped `::ffff:0:0/96`, compatible
/// `::/96` and well-known NAT64 `64:ff9b::/96`.
const V6_EMBED_LOW32: &[u128] = &[
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0).to_bits(),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0).to_bits(),
    Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0).to_bits(),
];

/// The 6to4 prefix `2002::/16`, which carries an IPv4 address in bits 16..48.
const V6_6TO4: u128 = Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0).to_bits();

/// Whether the top `len` bits of `addr` equal those of `net` (both `bits` wide).
fn in_prefix(addr: u128, net: u128, len: u32, bits: u32) -> bool {
    // A shift by the full width is `None`; a zero-length prefix matches everything.
    let mask = u128::MAX.checked_shl(bits - len).unwrap_or(0) & (u128::MAX >> (128 - bits));
    addr & mask == net & mask
}

/// Class of an IP address for SSRF decisions.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Class of an IPv4 address: the first matching range in [`V4_RANGES`], else public.
fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let bits = u128::from(ip.to_bits());
    V4_RANGES
        .iter()
        .find(|r| in_prefix(bits, u128::from(r.net), r.len, 32))
        .map_or(AddressClass::Public, |r| r.class)
}

/// Class of an IPv6 address. `::` and `::1` are decided first because they also lie in the
/// IPv4-compatible block; forms embedding an IPv4 address are decided by that address.
fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return classify_v4(v4);
    }
    let bits = ip.to_bits();
    V6_RANGES
        .iter()
        .find(|r| in_prefix(bits, r.net, r.len, 128))
        .map_or(AddressClass::Public, |r| r.class)
}

/// The IPv4 address an IPv6 address stands for, if it is mapped, compatible, NAT64 or 6to4.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    let o = ip.octets();
    if V6_EMBED_LOW32.iter().any(|&net| in_prefix(bits, net, 96, 128)) {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if in_prefix(bits, V6_6TO4, 16, 128) {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use AddressClass::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn domain_of(raw: &str) -> String {
        Target::parse(raw).unwrap().domain()
    }

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| normalize_host(e).unwrap()).collect()
    }

    const CLASS_TABLE: &[(&str, AddressClass)] = &[
        // Unspecified: all of 0/8.
        ("0.0.0.0", Unspecified),
        ("0.1.2.3", Unspecified),
        ("0.255.255.255", Unspecified),
        ("1.0.0.0", Public),
        // Loopback.
        ("127.0.0.0", Loopback),
        ("127.0.0.1", Loopback),
        ("127.255.255.255", Loopback),
        ("126.255.255.255", Public),
        ("128.0.0.0", Public),
        // Private.
        ("9.255.255.255", Public),
        ("10.0.0.0", Private),
        ("10.255.255.255", Private),
        ("11.0.0.0", Public),
        ("172.15.255.255", Public),
        ("172.16.0.0", Private),
        ("172.31.255.255", Private),
        ("172.32.0.0", Public),
        ("192.167.255.255", Public),
        ("192.168.0.0", Private),
        ("192.168.255.255", Private),
        ("192.169.0.0", Public),
        // Link-local, cloud metadata.
        ("169.253.255.255", Public),
        ("169.254.0.0", LinkLocal),
        ("169.254.169.254", LinkLocal),
        ("169.254.255.255", LinkLocal),
        ("169.255.0.0", Public),
        // Shared CGNAT.
        ("100.63.255.255", Public),
        ("100.64.0.0", SharedCgnat),
        ("100.127.255.255", SharedCgnat),
        ("100.128.0.0", Public),
        // Multicast and the reserved block above it.
        ("223.255.255.255", Public),
        ("224.0.0.0", Multicast),
        ("239.255.255.255", Multicast),
        ("240.0.0.0", Reserved),
        ("255.255.255.254", Reserved),
        ("255.255.255.255", Broadcast),
        // Other reserved nets.
        ("192.0.0.0", Reserved),
        ("192.0.0.255", Reserved),
        ("192.0.1.0", Public),
        ("192.0.2.0", Reserved),
        ("192.0.2.255", Reserved),
        ("192.0.3.0", Public),
        ("198.17.255.255", Public),
        ("198.18.0.0", Reserved),
        ("198.19.255.255", Reserved),
        ("198.20.0.0", Public),
        ("198.51.100.7", Reserved),
        ("198.51.101.0", Public),
        ("203.0.113.0", Reserved),
        ("203.0.113.255", Reserved),
        ("203.0.114.0", Public),
        ("8.8.8.8", Public),
        ("1.1.1.1", Public),
        // IPv6 basics.
        ("::", Unspecified),
        ("::1", Loopback),
        ("fe80::", LinkLocal),
        ("fe80::1", LinkLocal),
        ("febf:ffff::1", LinkLocal),
        ("fc00::", UniqueLocal),
        ("fd12:3456::1", UniqueLocal),
        ("fdff:ffff::1", UniqueLocal),
        ("fbff:ffff::1", Public),
        ("ff00::", Multicast),
        ("ff02::1", Multicast),
        ("fec0::1", Reserved),
        ("feff:ffff::1", Reserved),
        ("2001:db8::", Reserved),
        ("2001:db8:ffff:ffff::1", Reserved),
        ("2001:db9::1", Public),
        ("100::", Reserved),
        ("100::ffff:ffff:ffff:ffff", Reserved),
        ("100:0:0:1::", Public),
        ("64:ff9b:1::1", Reserved),
        ("2606:4700:4700::1111", Public),
        ("2a00:1450:4001:81c::200e", Public),
        // IPv4-mapped.
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:7f00:1", Loopback),
        ("::ffff:169.254.169.254", LinkLocal),
        ("::ffff:10.0.0.1", Private),
        ("::ffff:0.0.0.0", Unspecified),
        ("::ffff:255.255.255.255", Broadcast),
        ("::ffff:8.8.8.8", Public),
        // IPv4-compatible.
        ("::127.0.0.1", Loopback),
        ("::192.168.1.1", Private),
        ("::0.0.0.2", Unspecified),
        ("::8.8.8.8", Public),
        // NAT64.
        ("64:ff9b::127.0.0.1", Loopback),
        ("64:ff9b::a9fe:a9fe", LinkLocal),
        ("64:ff9b::8.8.8.8", Public),
        // 6to4.
        ("2002:7f00:1::", Loopback),
        ("2002:a00:1:1::1", Private),
        ("2002:a9fe:a9fe::", LinkLocal),
        ("2002:808:808::1", Public),
    ];

    #[test]
    fn classify_table() {
        assert!(CLASS_TABLE.len() >= 40);
        for &(text, expected) in CLASS_TABLE {
            assert_eq!(classify(ip(text)), expected, "{text}");
        }
    }

    #[test]
    fn class_names_and_public_flag() {
        assert!(Public.is_public());
        for class in [Loopback, Private, LinkLocal, SharedCgnat, UniqueLocal, Multicast] {
            assert!(!class.is_public(), "{class}");
        }
        for class in [Unspecified, Broadcast, Reserved] {
            assert!(!class.is_public(), "{class}");
        }
        assert_eq!(LinkLocal.name(), "link_local");
        assert_eq!(SharedCgnat.to_string(), "shared_cgnat");
    }

    #[test]
    fn bracketed_mapped_target_is_classified_by_ipv4() {
        let target = Target::parse("http://[::ffff:10.0.0.1]/").unwrap();
        let TargetHost::Ip(addr) = *target.host() else { panic!("not an ip host") };
        assert_eq!(classify(addr), Private);
        assert_eq!(target.domain(), "::ffff:10.0.0.1");
        let metadata = Target::parse("http://[::ffff:a9fe:a9fe]/latest").unwrap();
        let TargetHost::Ip(addr) = *metadata.host() else { panic!("not an ip host") };
        assert_eq!(classify(addr), LinkLocal);
    }

    #[test]
    fn numeric_ipv4_forms_are_literals() {
        let loopback = TargetHost::Ip(ip("127.0.0.1"));
        for raw in [
            "http://0x7f.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://127.0.0.1./",
            "http://127.0.0.%31/",
        ] {
            let target = Target::parse(raw).unwrap();
            assert_eq!(target.host(), &loopback, "{raw}");
            assert_eq!(target.domain(), "127.0.0.1", "{raw}");
        }
        assert!(Target::parse("http://1.2.3.256/").is_err());
        assert!(Target::parse("http://example.0x7f/").is_err());
    }

    #[test]
    fn idna_case_and_trailing_dot() {
        assert_eq!(domain_of("https://bücher.example/"), "xn--bcher-kva.example");
        assert_eq!(domain_of("https://BÜCHER.Example/"), "xn--bcher-kva.example");
        assert_eq!(domain_of("https://API.Stripe.COM/v1"), "api.stripe.com");
        assert_eq!(domain_of("https://ex%61mple.com/"), "example.com");
        let dotted = Target::parse("https://example.com./a?b=c").unwrap();
        assert_eq!(dotted.domain(), "example.com");
        assert_eq!(dotted.url().as_str(), "https://example.com/a?b=c");
        assert_eq!(dotted.host(), Target::parse("https://example.com/").unwrap().host());
    }

    #[test]
    fn empty_or_invalid_hosts_are_refused() {
        assert_eq!(Target::parse("http://./").unwrap_err(), TargetError::MissingHost);
        assert!(matches!(Target::parse("http://a../"), Err(TargetError::InvalidHost(_))));
        assert!(matches!(Target::parse("http://a..b/"), Err(TargetError::InvalidHost(_))));
        assert!(matches!(Target::parse("http://*.a.com/"), Err(TargetError::InvalidHost(_))));
        let long = format!("http://{}.com/", "a".repeat(64));
        assert!(matches!(Target::parse(&long), Err(TargetError::InvalidHost(_))));
        assert!(matches!(Target::parse("http:///"), Err(TargetError::Malformed(_))));
        assert!(matches!(Target::parse("not a url"), Err(TargetError::Malformed(_))));
        assert!(matches!(Target::parse("http://h:0/"), Err(TargetError::Malformed(_))));
    }

    #[test]
    fn userinfo_is_refused() {
        for raw in [
            "https://user:pw@host.com/",
            "https://user@host.com/",
            "https://:pw@host.com/",
            "https://@host.com/",
            "https://:@host.com/",
            "https:\\\\@host.com/",
            "https:@host.com/",
            " https://@host.com/ ",
            "https://\t@host.com/",
        ] {
            assert_eq!(Target::parse(raw).unwrap_err(), TargetError::Userinfo, "{raw}");
        }
        // An `@` after the authority is part of the path or query, not userinfo.
        assert!(Target::parse("https://host.com/a@b?c=d@e#f@g").is_ok());
    }

    #[test]
    fn only_http_and_https() {
        for (raw, scheme) in [
            ("ftp://host.com/", "ftp"),
            ("file:///etc/passwd", "file"),
            ("gopher://host.com/", "gopher"),
            ("ws://host.com/", "ws"),
            ("javascript:alert(1)", "javascript"),
            ("FTP://host.com/", "ftp"),
        ] {
            let err = Target::parse(raw).unwrap_err();
            assert_eq!(err, TargetError::UnsupportedScheme(scheme.to_string()), "{raw}");
        }
        assert!(Target::parse("https://host.com/").unwrap().is_https());
        assert!(!Target::parse("HTTP://host.com/").unwrap().is_https());
    }

    #[test]
    fn ports() {
        assert_eq!(Target::parse("https://h.com/").unwrap().port(), 443);
        assert_eq!(Target::parse("http://h.com/").unwrap().port(), 80);
        assert_eq!(Target::parse("https://h.com:8443/").unwrap().port(), 8443);
        assert_eq!(Target::parse("https://h.com:443/").unwrap().port(), 443);
        assert_eq!(Target::parse("http://h.com:443/").unwrap().port(), 443);
    }

    #[test]
    fn display_without_query_drops_query_and_fragment() {
        let t =
            Target::parse("https://api.example.com:8443/v1/x?api_key=sk_live_123#frag").unwrap();
        assert_eq!(t.display_without_query(), "https://api.example.com:8443/v1/x");
        let t = Target::parse("https://api.example.com/?api_key=sk_live_123").unwrap();
        assert_eq!(t.display_without_query(), "https://api.example.com/");
        assert!(!format!("{t:?}").contains("sk_live_123"));
        let t = Target::parse("http://[::1]:8080/p?q=1").unwrap();
        assert_eq!(t.display_without_query(), "http://[::1]:8080/p");
        assert_eq!(t.domain(), "::1");
    }

    #[test]
    fn errors_never_echo_the_query() {
        for raw in [
            "ftp://h.com/?api_key=sk_live_123",
            "https://u:p@h.com/?api_key=sk_live_123",
            "https://h.com:99999/?api_key=sk_live_123",
            "https://*.com/?api_key=sk_live_123",
        ] {
            let err = Target::parse(raw).unwrap_err().to_string();
            assert!(!err.contains("sk_live"), "{err}");
            assert_eq!(err, err.to_lowercase());
        }
    }

    #[test]
    fn host_allowed_is_exact() {
        let allow = list(&["api.stripe.com"]);
        let host = |raw: &str| Target::parse(raw).unwrap().host().clone();
        assert!(host_allowed(&host("https://api.stripe.com/v1"), &allow));
        assert!(host_allowed(&host("https://API.STRIPE.COM./v1"), &allow));
        assert!(host_allowed(&host("https://api.stripe.com:8443/"), &allow));
        for denied in [
            "https://evil-api.stripe.com/",
            "https://api.stripe.com.evil.com/",
            "https://stripe.com/",
            "https://x.api.stripe.com/",
            "https://api.stripe.co/",
        ] {
            assert!(!host_allowed(&host(denied), &allow), "{denied}");
        }
        assert!(!host_allowed(&host("https://api.stripe.com/"), &[]));
    }

    #[test]
    fn host_allowed_for_ip_entries() {
        let allow = list(&["0x7f.1", "[::FFFF:a00:1]", "2001:DB8::1"]);
        let host = |raw: &str| Target::parse(raw).unwrap().host().clone();
        assert!(host_allowed(&host("http://127.0.0.1/"), &allow));
        assert!(host_allowed(&host("http://2130706433/"), &allow));
        assert!(host_allowed(&host("http://[::ffff:10.0.0.1]/"), &allow));
        assert!(host_allowed(&host("http://[2001:db8:0::1]/"), &allow));
        assert!(!host_allowed(&host("http://10.0.0.1/"), &allow));
        assert!(!host_allowed(&host("http://127.0.0.2/"), &allow));
    }

    #[test]
    fn normalize_host_good_entries() {
        for (entry, expected) in [
            ("api.stripe.com", "api.stripe.com"),
            ("  API.Stripe.COM.  ", "api.stripe.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("localhost", "localhost"),
            ("my_host.internal", "my_host.internal"),
            ("2130706433", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("10.0.0.1.", "10.0.0.1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("[2001:DB8:0:0::1]", "2001:db8::1"),
            ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
        ] {
            assert_eq!(normalize_host(entry).unwrap(), expected, "{entry}");
        }
    }

    #[test]
    fn normalize_host_bad_entries_say_why() {
        for (entry, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("https://api.stripe.com", "scheme"),
            ("https:api.stripe.com", "scheme"),
            ("api.stripe.com/v1", "path"),
            ("api.stripe.com?x=1", "query"),
            ("api.stripe.com:443", "port"),
            ("[::1]:443", "port"),
            ("user@api.stripe.com", "userinfo"),
            ("user:pw@api.stripe.com", "userinfo"),
            ("*.stripe.com", "wildcard"),
            (".stripe.com", "leading dot"),
            ("api stripe.com", "spaces"),
            ("api.stripe.com\t.evil", "spaces"),
            ("[::1", "unclosed"),
            ("[not-v6]", "ipv6"),
            ("1:2:3", "ipv6"),
            ("a..b", "empty label"),
            ("example.com..", "empty label"),
            ("1.2.3.256", "ipv4"),
            ("exa<mple.com", "domain"),
            (".", "leading dot"),
        ] {
            match normalize_host(entry) {
                Err(TargetError::InvalidHost(msg)) => {
                    assert!(msg.contains(why), "{entry:?}: {msg}");
                    assert_eq!(msg, msg.to_lowercase());
                }
                other => panic!("{entry:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn entry_and_target_normalise_alike() {
        for raw in ["bücher.example", "EXAMPLE.com.", "0x7f.1", "[::ffff:a00:1]", "a-b_c.d"] {
            let target = Target::parse(&format!("https://{raw}/")).unwrap();
            assert_eq!(normalize_host(raw).unwrap(), target.domain(), "{raw}");
        }
    }

    proptest! {
        #[test]
        fn classify_never_panics(v4 in any::<u32>(), v6 in any::<u128>()) {
            classify(IpAddr::V4(Ipv4Addr::from_bits(v4)));
            classify(IpAddr::V6(Ipv6Addr::from_bits(v6)));
        }

        #[test]
        fn embedded_forms_keep_the_ipv4_class(a: u8, b: u8, c: u8, d: u8) {
            let v4 = Ipv4Addr::new(a, b, c, d);
            let class = classify(IpAddr::V4(v4));
            let mapped = classify(IpAddr::V6(v4.to_ipv6_mapped()));
            prop_assert_eq!(mapped, class);
            if !class.is_public() {
                prop_assert!(!mapped.is_public());
                let via_url = Target::parse(&format!("http://[::ffff:{v4}]/")).unwrap();
                let TargetHost::Ip(addr) = *via_url.host() else { panic!("not an ip host") };
                prop_assert!(!classify(addr).is_public());
            }
            let [hi, lo] = [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])];
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo);
            prop_assert_eq!(classify(IpAddr::V6(nat64)), class);
            let six_to_four = Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1);
            prop_assert_eq!(classify(IpAddr::V6(six_to_four)), class);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(raw in ".{0,80}") {
            let _ = Target::parse(&raw);
            let _ = normalize_host(&raw);
        }

        #[test]
        fn query_never_reaches_display_or_errors(
            host in "[a-z]{1,10}\\.(com|net)",
            secret in "[A-Za-z0-9]{8,20}",
        ) {
            let secret = format!("sk{secret}");
            let target = Target::parse(&format!("https://{host}/p?api_key={secret}")).unwrap();
            prop_assert!(!target.display_without_query().contains(&secret));
            let debug = format!("{target:?}");
            prop_assert!(!debug.contains(&secret));
            let err = Target::parse(&format!("ftp://{host}/p?api_key={secret}")).unwrap_err();
            prop_assert!(!err.to_string().contains(&secret));
        }
    }
}
