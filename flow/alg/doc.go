// Package alg holds Tandem's application-level gateways: the FTP ALG that
// makes a data connection reach the backend of its control connection,
// and the TLS ClientHello reader behind SSL_BRIDGE persistence.
//
// # FTP: why the parser runs in BPF
//
// The FTP ALG must be synchronous with the packets. A client that reads a
// 227 reply connects to the data port at once, so the expectation for that
// data connection must exist before the reply leaves the node; a user-space
// parser fed by a ring buffer would lose that race. So the parsing that
// creates expectations runs in the XDP program, on the control connection's
// payload (flow/bpf/ftp.h, included by lb.c): at most LineMax (128) bytes of
// the segment are copied with bpf_xdp_load_bytes into a per-CPU scratch
// value and parsed with loops bounded by constants. A line longer than that
// is not a reply or command we act on: it is counted (ReasonTooLong) and
// creates nothing.
//
// This package has the same parser in Go, ParseFTPLine and Check: the
// reference the BPF code is tested against (table-driven cases with lines
// from vsftpd, proFTPd and curl, every prefix and random mutations of them,
// and FuzzBPFAgrees, all run through BPF_PROG_TEST_RUN and compared field
// for field), the fuzz oracle, and what `clusterctl explain` and tests use.
//
// # FTP: no payload rewriting
//
// Backends advertise the VIP as their passive address (vsftpd
// pasv_address=VIP, pasv_addr_resolve=NO, with a pasv_min_port..
// pasv_max_port range; see deploy/ftp). The data plane therefore never
// rewrites FTP payload, so there are no TCP sequence adjustments to track
// and mirror, and a partner that takes a control connection over needs
// nothing but its flow entry.
//
//   - Backend -> client replies "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)"
//     (whose address must be the VIP) and "229 Entering Extended Passive
//     Mode (|||port|)" create a passive Expectation: client:any ->
//     VIP:port, TCP, is forwarded to backend:port (the same port), once,
//     within Config.TTL (30 s).
//   - Client -> backend commands "PORT h1,h2,h3,h4,p1,p2" and
//     "EPRT |1|a.b.c.d|port|" / "EPRT |2|ipv6|port|" (whose address must be
//     the client's own) create an active Expectation: backend:any ->
//     client:port, TCP, gets its source address rewritten to the VIP (the
//     data plane keeps ports: VIP:20 for a backend that connects from 20,
//     vsftpd connect_from_port_20=YES).
//   - Anything malformed, cut short, longer than LineMax, with numbers out
//     of range or with an address other than the VIP (replies) or the
//     client (commands; the FTP bounce attack) creates no expectation and is
//     counted by Reason.
//
// IPv6 addresses in EPRT are parsed in BPF, "::" compression included
// (hex groups of 1 to 4 digits, at most one "::"), and compared word by
// word with the client's address, so no canonical form is required of the
// client. The embedded-IPv4 form (::ffff:1.2.3.4) and zone suffixes are
// refused as syntax errors: no FTP client we know sends them for a global
// IPv6 address, and refusing them keeps the BPF grammar small.
//
// Only the first line of a segment is read, and only if it ends in that
// segment. A command split over two segments (a client typing by hand over
// telnet) creates no expectation (ReasonPartial); real clients write each
// command and servers each reply with one write. Multi-line replies
// ("227-...") are not passive-mode replies and are ignored.
//
// # FTP: verifier cost
//
// The BPF parser keeps its cursor, the line length and the IPv6 group
// state in the per-CPU scratch value and reads them back with volatile
// loads. The verifier does not track values in map memory, so it verifies
// the grammar once instead of once per way of splitting the line into
// fields: about 45k processed instructions for the test program compiled
// with -mcpu=v3 like lb.c (TestBPFVerifierBudget, budget 75k), against more
// than the 1M limit with the cursor in a register (and 94k with the IPv6
// state on the stack).
//
// # TLS: ClientHello and SSL_BRIDGE persistence
//
// ParseClientHello reads a ClientHello from the first bytes of a TLS
// connection (record header, handshake header, legacy session id, and the
// server_name, supported_versions, session_ticket and pre_shared_key
// extensions), across several records if the hello is split.
// ParseServerHello reads the backend's answer (the session id it assigned,
// the negotiated version, a HelloRetryRequest), and Resumed tells whether it
// resumed what the client offered. SSL_BRIDGE vservers never terminate TLS;
// the hellos are only read. Tested on hellos of crypto/tls (TLS 1.2 and 1.3,
// tickets, PSK, HelloRetryRequest) and of OpenSSL's s_client/s_server with
// a real TLS 1.2 session-id resumption.
//
// What persistence on the TLS session id can do at L4 is limited: the
// backend is chosen at the SYN, and the ClientHello arrives after the
// three-way handshake, in the first data segment. An ADC that persists on
// the session id delays the binding: it completes the handshake with the
// client itself (SYN proxy), reads the ClientHello, then opens the
// connection to the backend and replays the bytes. Tandem does not proxy
// TCP: in nat mode the backend answers the SYN, so by the time the session
// id is known the connection is bound. What we recommend, in this order:
//
//  1. SOURCEIP persistence for SSL_BRIDGE vservers whose clients resume
//     sessions. It is decided at the SYN, is a pure function of the packet
//     in STATELESS mode and is mirrored in STATEFUL mode, and it lands a
//     resuming client on the backend that holds its session in the common
//     case (a client rarely changes address within a session's lifetime;
//     clients behind a pool of NAT addresses may). Clients that resume with
//     tickets (TLS 1.2 session tickets, TLS 1.3 PSK) carry their state with
//     them and need no persistence when the backends share ticket keys.
//  2. SSLSESSION persistence as a table the owner keeps: session id ->
//     backend, learned from the ServerHello of connections that completed
//     (the id the server assigned; crypto/tls servers assign none, OpenSSL
//     ones do) and consulted when the ClientHello of a NEW connection offers
//     that id. Only TLS 1.2 session ids mean anything: TLS 1.3 ids are
//     random and TLS 1.3 resumes with PSK tickets. It can only act if the
//     connection is still unbound, which in nat mode it never is; it
//     becomes possible
//     with a SYN-proxy mode (the owner answers the SYN with a cookie, and
//     binds and replays once the ClientHello is read), which is future
//     work. Until then a resumed session reaches its backend through
//     SOURCEIP persistence, and the session-id table can only observe:
//     count ClientHellos whose offered session id belongs to another
//     backend than the one the connection is bound to, which tells the
//     operator whether SOURCEIP is enough for their clients.
//
// The SNI name is read for the same future use (and for `show conn`); it
// is not secret but is not trusted either: it selects nothing today.
package alg
