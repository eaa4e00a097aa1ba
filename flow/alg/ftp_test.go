package alg

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

var (
	vip4    = netip.MustParseAddr("203.0.113.10")
	client4 = netip.MustParseAddr("198.51.100.7")
	vip6    = netip.MustParseAddr("2001:db8::10")
	client6 = netip.MustParseAddr("2001:db8:1::7")
)

// ftpCase is one segment payload and what the ALG must make of it on a
// control connection of the family of vip/client.
type ftpCase struct {
	name   string
	dir    Direction
	v6     bool
	line   string
	kind   Kind
	reason Reason
	addr   string // expected address when reason is ok
	port   uint16
}

func (c ftpCase) peers() (vip, client netip.Addr) {
	if c.v6 {
		return vip6, client6
	}
	return vip4, client4
}

// ftpCases are lines as vsftpd, proFTPd, IIS and curl write them, and
// hostile or broken variants.
var ftpCases = []ftpCase{
	// Replies, passive mode.
	{"vsftpd 227", FromBackend, false, "227 Entering Passive Mode (203,0,113,10,117,48).\r\n", KindPASV, ReasonOK, "203.0.113.10", 30000},
	{"227 without parentheses", FromBackend, false, "227 =203,0,113,10,4,1\r\n", KindPASV, ReasonOK, "203.0.113.10", 1025},
	{"227 LF only", FromBackend, false, "227 Entering Passive Mode (203,0,113,10,255,255)\n", KindPASV, ReasonOK, "203.0.113.10", 65535},
	{"227 leading zeros", FromBackend, false, "227 ok (203,000,113,010,001,000)\r\n", KindPASV, ReasonOK, "203.0.113.10", 256},
	{"227 followed by another reply", FromBackend, false, "227 Entering Passive Mode (203,0,113,10,117,48).\r\n150 Here\r\n", KindPASV, ReasonOK, "203.0.113.10", 30000},
	{"227 backend's own address", FromBackend, false, "227 Entering Passive Mode (10,1,0,10,117,48).\r\n", KindPASV, ReasonAddress, "", 0},
	{"227 the client's address", FromBackend, false, "227 Entering Passive Mode (198,51,100,7,117,48).\r\n", KindPASV, ReasonAddress, "", 0},
	{"227 on IPv6 control", FromBackend, true, "227 Entering Passive Mode (203,0,113,10,117,48).\r\n", KindPASV, ReasonAddress, "", 0},
	{"227 byte 256", FromBackend, false, "227 Entering Passive Mode (203,0,113,256,117,48).\r\n", KindPASV, ReasonRange, "", 0},
	{"227 four digits", FromBackend, false, "227 Entering Passive Mode (203,0,113,0010,117,48).\r\n", KindPASV, ReasonRange, "", 0},
	{"227 port 0", FromBackend, false, "227 Entering Passive Mode (203,0,113,10,0,0).\r\n", KindPASV, ReasonRange, "", 0},
	{"227 five numbers", FromBackend, false, "227 Entering Passive Mode (203,0,113,10,117).\r\n", KindPASV, ReasonSyntax, "", 0},
	{"227 spaces after commas", FromBackend, false, "227 Entering Passive Mode (203, 0, 113, 10, 117, 48).\r\n", KindPASV, ReasonSyntax, "", 0},
	{"227 no numbers", FromBackend, false, "227 Entering Passive Mode.\r\n", KindPASV, ReasonSyntax, "", 0},
	{"227 unterminated", FromBackend, false, "227 Entering Passive Mode (203,0,113,10,117,48).", KindPASV, ReasonPartial, "", 0},
	{"227 too long", FromBackend, false, "227 " + strings.Repeat("x", 120) + "(203,0,113,10,117,48)\r\n", KindPASV, ReasonTooLong, "", 0},
	{"227 exactly LineMax", FromBackend, false, "227 " + strings.Repeat("x", LineMax-4-23) + "(203,0,113,10,117,48)\r\n", KindPASV, ReasonOK, "203.0.113.10", 30000},
	{"227 continuation line", FromBackend, false, "227-Entering Passive Mode (203,0,113,10,117,48).\r\n", KindNone, ReasonOK, "", 0},
	{"vsftpd 229", FromBackend, false, "229 Entering Extended Passive Mode (|||30001|)\r\n", KindEPSV, ReasonOK, "203.0.113.10", 30001},
	{"vsftpd 229 IPv6", FromBackend, true, "229 Entering Extended Passive Mode (|||30001|)\r\n", KindEPSV, ReasonOK, "2001:db8::10", 30001},
	{"229 other delimiter", FromBackend, false, "229 Extended (!!!2121!)\r\n", KindEPSV, ReasonOK, "203.0.113.10", 2121},
	{"229 address filled in", FromBackend, false, "229 Entering Extended Passive Mode (|1|10.1.0.10|30001|)\r\n", KindEPSV, ReasonSyntax, "", 0},
	{"229 mixed delimiters", FromBackend, false, "229 Entering Extended Passive Mode (|||30001!)\r\n", KindEPSV, ReasonSyntax, "", 0},
	{"229 digit delimiter", FromBackend, false, "229 Entering Extended Passive Mode (1113000011)\r\n", KindEPSV, ReasonSyntax, "", 0},
	{"229 port 65536", FromBackend, false, "229 Entering Extended Passive Mode (|||65536|)\r\n", KindEPSV, ReasonRange, "", 0},
	{"229 six digits", FromBackend, false, "229 Entering Extended Passive Mode (|||030001|)\r\n", KindEPSV, ReasonRange, "", 0},
	{"229 port 0", FromBackend, false, "229 Entering Extended Passive Mode (|||0|)\r\n", KindEPSV, ReasonRange, "", 0},
	{"229 no closing parenthesis", FromBackend, false, "229 Entering Extended Passive Mode (|||30001|\r\n", KindEPSV, ReasonSyntax, "", 0},
	{"other replies", FromBackend, false, "150 Here comes the directory listing.\r\n", KindNone, ReasonOK, "", 0},
	{"a command from the backend", FromBackend, false, "PORT 198,51,100,7,160,59\r\n", KindNone, ReasonOK, "", 0},
	{"short", FromBackend, false, "227", KindNone, ReasonOK, "", 0},
	// Commands, active mode.
	{"curl PORT", FromClient, false, "PORT 198,51,100,7,160,59\r\n", KindPORT, ReasonOK, "198.51.100.7", 41019},
	{"lower case port", FromClient, false, "port 198,51,100,7,160,59\r\n", KindPORT, ReasonOK, "198.51.100.7", 41019},
	{"PORT extra spaces", FromClient, false, "PORT   198,51,100,7,160,59  \r\n", KindPORT, ReasonOK, "198.51.100.7", 41019},
	{"PORT bounce to a third host", FromClient, false, "PORT 192,0,2,25,0,25\r\n", KindPORT, ReasonAddress, "", 0},
	{"PORT bounce to the VIP", FromClient, false, "PORT 203,0,113,10,0,21\r\n", KindPORT, ReasonAddress, "", 0},
	{"PORT trailing garbage", FromClient, false, "PORT 198,51,100,7,160,59,1\r\n", KindPORT, ReasonSyntax, "", 0},
	{"PORT on IPv6 control", FromClient, true, "PORT 198,51,100,7,160,59\r\n", KindPORT, ReasonAddress, "", 0},
	{"PORT byte 300", FromClient, false, "PORT 198,51,100,7,300,59\r\n", KindPORT, ReasonRange, "", 0},
	{"PORT empty", FromClient, false, "PORT \r\n", KindPORT, ReasonSyntax, "", 0},
	{"curl EPRT IPv4", FromClient, false, "EPRT |1|198.51.100.7|41019|\r\n", KindEPRT, ReasonOK, "198.51.100.7", 41019},
	{"curl EPRT IPv6", FromClient, true, "EPRT |2|2001:db8:1::7|41019|\r\n", KindEPRT, ReasonOK, "2001:db8:1::7", 41019},
	{"EPRT IPv6 full form", FromClient, true, "EPRT |2|2001:0db8:0001:0000:0000:0000:0000:0007|41019|\r\n", KindEPRT, ReasonOK, "2001:db8:1::7", 41019},
	{"EPRT IPv6 upper case", FromClient, true, "eprt !2!2001:DB8:1:0::7!41019!\r\n", KindEPRT, ReasonOK, "2001:db8:1::7", 41019},
	{"EPRT IPv6 other address", FromClient, true, "EPRT |2|2001:db8:1::8|41019|\r\n", KindEPRT, ReasonAddress, "", 0},
	{"EPRT IPv6 unspecified", FromClient, true, "EPRT |2|::|41019|\r\n", KindEPRT, ReasonAddress, "", 0},
	{"EPRT IPv6 trailing gap", FromClient, true, "EPRT |2|2001:db8:1::|41019|\r\n", KindEPRT, ReasonAddress, "", 0},
	{"EPRT IPv6 two gaps", FromClient, true, "EPRT |2|2001::1::7|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT IPv6 nine groups", FromClient, true, "EPRT |2|1:2:3:4:5:6:7:8:9|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT IPv6 seven groups", FromClient, true, "EPRT |2|1:2:3:4:5:6:7|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT IPv6 five hex digits", FromClient, true, "EPRT |2|2001:0db80::7|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT IPv6 embedded IPv4", FromClient, true, "EPRT |2|::ffff:198.51.100.7|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT IPv6 zone", FromClient, true, "EPRT |2|fe80::1%eth0|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT IPv6 trailing colon", FromClient, true, "EPRT |2|2001:db8:1::7:|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT IPv4 on IPv6 control", FromClient, true, "EPRT |1|198.51.100.7|41019|\r\n", KindEPRT, ReasonAddress, "", 0},
	{"EPRT IPv6 on IPv4 control", FromClient, false, "EPRT |2|2001:db8:1::7|41019|\r\n", KindEPRT, ReasonAddress, "", 0},
	{"EPRT bounce", FromClient, false, "EPRT |1|192.0.2.25|25|\r\n", KindEPRT, ReasonAddress, "", 0},
	{"EPRT protocol 3", FromClient, false, "EPRT |3|198.51.100.7|41019|\r\n", KindEPRT, ReasonFamily, "", 0},
	{"EPRT protocol letter", FromClient, false, "EPRT |x|198.51.100.7|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT port 70000", FromClient, false, "EPRT |1|198.51.100.7|70000|\r\n", KindEPRT, ReasonRange, "", 0},
	{"EPRT no final delimiter", FromClient, false, "EPRT |1|198.51.100.7|41019\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT three bytes", FromClient, false, "EPRT |1|198.51.100|41019|\r\n", KindEPRT, ReasonSyntax, "", 0},
	{"EPRT too long", FromClient, false, "EPRT |1|198.51.100.7|41019|" + strings.Repeat(" ", 200) + "\r\n", KindEPRT, ReasonTooLong, "", 0},
	{"other commands", FromClient, false, "RETR big.bin\r\n", KindNone, ReasonOK, "", 0},
	{"PASV command", FromClient, false, "PASV\r\n", KindNone, ReasonOK, "", 0},
	{"a reply from the client", FromClient, false, "227 Entering Passive Mode (203,0,113,10,117,48).\r\n", KindNone, ReasonOK, "", 0},
	{"PORTX", FromClient, false, "PORTX 198,51,100,7,160,59\r\n", KindNone, ReasonOK, "", 0},
}

func (c ftpCase) want() Expect {
	if c.reason != ReasonOK || c.kind == KindNone {
		return Expect{Kind: c.kind}
	}
	return Expect{Kind: c.kind, Addr: netip.MustParseAddr(c.addr), Port: c.port}
}

func TestCheck(t *testing.T) {
	for _, c := range ftpCases {
		t.Run(c.name, func(t *testing.T) {
			vip, client := c.peers()
			got, r := Check([]byte(c.line), c.dir, vip, client)
			if got != c.want() || r != c.reason {
				t.Errorf("Check(%q) = %+v, %v; want %+v, %v", c.line, got, r, c.want(), c.reason)
			}
		})
	}
}

func TestParseFTPLineErrors(t *testing.T) {
	_, err := ParseFTPLine([]byte("227 Entering Passive Mode (203,0,113,256,117,48).\r\n"), FromBackend)
	if !errors.Is(err, ErrRange) || ReasonOf(err) != ReasonRange {
		t.Errorf("err = %v, want ErrRange", err)
	}
	e, err := ParseFTPLine([]byte("PORT 192,0,2,25,0,25\r\n"), FromClient)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Validate(vip4, client4); !errors.Is(err, ErrAddress) {
		t.Errorf("bounce: err = %v, want ErrAddress", err)
	}
	e, err = ParseFTPLine([]byte("229 Entering Extended Passive Mode (|||30001|)\r\n"), FromBackend)
	if err != nil || e.Addr.IsValid() {
		t.Errorf("229 before Validate = %+v, %v: want no address", e, err)
	}
}

// TestIPv6AgainstNetip renders addresses in every textual form and checks
// the ALG's own IPv6 parser reads them as net/netip does.
func TestIPv6AgainstNetip(t *testing.T) {
	addrs := []string{"::", "::1", "1::", "2001:db8::10", "2001:db8:1::7", "fe80::1:2:3:4", "1:2:3:4:5:6:7:8",
		"1:0:0:4:0:0:0:8", "0:0:0:0:0:0:0:1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::a:b", "a:b::"}
	for _, s := range addrs {
		a := netip.MustParseAddr(s)
		for _, text := range []string{s, a.String(), a.StringExpanded(), strings.ToUpper(a.StringExpanded())} {
			line := fmt.Sprintf("EPRT |2|%s|1024|\r\n", text)
			e, err := ParseFTPLine([]byte(line), FromClient)
			if err != nil || e.Addr != a {
				t.Errorf("%q: %v, %v; want %v", line, e.Addr, err, a)
			}
		}
	}
}

func FuzzParseFTPLine(f *testing.F) {
	for _, c := range ftpCases {
		f.Add([]byte(c.line), uint8(c.dir), c.v6)
	}
	f.Fuzz(func(t *testing.T, line []byte, dir uint8, v6 bool) {
		d := Direction(dir%2 + 1)
		vip, client := vip4, client4
		if v6 {
			vip, client = vip6, client6
		}
		e, r := Check(line, d, vip, client)
		if r >= ReasonMax {
			t.Fatalf("reason %d out of range", r)
		}
		if e.Kind == KindNone {
			if r != ReasonOK || e != (Expect{}) {
				t.Fatalf("no kind but %+v, %v", e, r)
			}
			return
		}
		if r != ReasonOK {
			if e != (Expect{Kind: e.Kind}) {
				t.Fatalf("rejected line with data: %+v, %v", e, r)
			}
			return
		}
		want := client
		if e.Kind.Passive() {
			want = vip
		}
		if e.Addr != want || e.Port == 0 {
			t.Fatalf("accepted %+v for %q (want address %v, port > 0)", e, line, want)
		}
		if e.Kind == KindEPRT && e.Addr.Is6() {
			// The accepted address text parses the same with net/netip.
			if rest, ok := strings.CutPrefix(string(line), "EPRT |2|"); ok {
				if j := strings.IndexByte(rest, '|'); j > 0 {
					if a, err := netip.ParseAddr(rest[:j]); err != nil || a != e.Addr {
						t.Fatalf("%q: netip says %v, %v; ALG %v", rest[:j], a, err, e.Addr)
					}
				}
			}
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	for _, c := range benchCases(b) {
		vip, client := c.peers()
		line := []byte(c.line)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if _, r := Check(line, c.dir, vip, client); r != c.reason {
					b.Fatal(r)
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	for r := ReasonOK; r <= ReasonMax; r++ {
		err := r.Err()
		if (r == ReasonOK) != (err == nil) || (r != ReasonOK && ReasonOf(&LineError{Reason: r}) != r) {
			t.Errorf("reason %v: error %v", r, err)
		}
		t.Logf("%d %v %v", r, r, err)
	}
	if KindEPRT.String() != "eprt" || Kind(9).String() != "kind(9)" || !KindEPSV.Passive() || KindPORT.Passive() {
		t.Error("kind names")
	}
}
