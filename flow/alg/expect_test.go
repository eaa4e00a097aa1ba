package alg

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestNewExpectationPassive(t *testing.T) {
	ctl := Control{
		Client:  netip.MustParseAddrPort("198.51.100.7:40000"),
		VIP:     netip.MustParseAddrPort("203.0.113.10:21"),
		Backend: netip.MustParseAddrPort("10.1.0.10:21"),
	}
	e, r := Check([]byte("227 Entering Passive Mode (203,0,113,10,117,48).\r\n"), FromBackend, vip4, client4)
	if r != ReasonOK {
		t.Fatal(r)
	}
	const now = uint64(1e12)
	x, err := NewExpectation(Config{}, ctl, e, now)
	if err != nil {
		t.Fatal(err)
	}
	want := Expectation{
		Kind: KindPASV, Src: client4, Dst: vip4, DstPort: 30000,
		To: netip.MustParseAddrPort("10.1.0.10:30000"), ControlPort: 40000,
		Deadline: now + uint64(30*time.Second),
	}
	if x != want {
		t.Fatalf("got %+v\nwant %+v", x, want)
	}
	syn := netip.MustParseAddrPort("198.51.100.7:51000")
	if !x.Matches(syn, netip.MustParseAddrPort("203.0.113.10:30000"), now+1) {
		t.Error("the client's data SYN does not match")
	}
	for _, c := range []struct {
		src, dst string
		at       uint64
	}{
		{"198.51.100.8:51000", "203.0.113.10:30000", now},           // another client
		{"198.51.100.7:51000", "203.0.113.10:30001", now},           // another port
		{"198.51.100.7:51000", "203.0.113.10:30000", want.Deadline}, // expired
	} {
		if x.Matches(netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst), c.at) {
			t.Errorf("%s -> %s at %d matches", c.src, c.dst, c.at)
		}
	}
}

func TestNewExpectationActive(t *testing.T) {
	ctl := Control{
		Client:  netip.MustParseAddrPort("[2001:db8:1::7]:40000"),
		VIP:     netip.MustParseAddrPort("[2001:db8::10]:21"),
		Backend: netip.MustParseAddrPort("[fd01::10]:21"),
	}
	e, r := Check([]byte("EPRT |2|2001:db8:1::7|41019|\r\n"), FromClient, vip6, client6)
	if r != ReasonOK {
		t.Fatal(r)
	}
	x, err := NewExpectation(Config{TTL: time.Second, ActiveSourcePort: 2020}, ctl, e, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := Expectation{
		Kind: KindEPRT, Src: netip.MustParseAddr("fd01::10"), Dst: client6, DstPort: 41019,
		To: netip.MustParseAddrPort("[2001:db8::10]:2020"), ControlPort: 40000, Deadline: 5 + uint64(time.Second),
	}
	if x != want {
		t.Fatalf("got %+v\nwant %+v", x, want)
	}
	// vsftpd without connect_from_port_20 connects from any port.
	if !x.Matches(netip.MustParseAddrPort("[fd01::10]:33333"), netip.MustParseAddrPort("[2001:db8:1::7]:41019"), 6) {
		t.Error("the backend's data SYN does not match")
	}
}

func TestNewExpectationRefuses(t *testing.T) {
	ctl := Control{
		Client:  netip.MustParseAddrPort("198.51.100.7:40000"),
		VIP:     netip.MustParseAddrPort("203.0.113.10:21"),
		Backend: netip.MustParseAddrPort("10.1.0.10:21"),
	}
	if _, err := NewExpectation(Config{}, ctl, Expect{}, 0); !errors.Is(err, ErrNotExpecting) {
		t.Errorf("no kind: %v", err)
	}
	bounce := Expect{Kind: KindPORT, Addr: netip.MustParseAddr("192.0.2.25"), Port: 25}
	if _, err := NewExpectation(Config{}, ctl, bounce, 0); !errors.Is(err, ErrAddress) {
		t.Errorf("bounce: %v", err)
	}
	mixed := ctl
	mixed.Backend = netip.MustParseAddrPort("[fd01::10]:21")
	if _, err := NewExpectation(Config{}, mixed, Expect{Kind: KindEPSV, Addr: vip4, Port: 3000}, 0); !errors.Is(err, ErrMixedFamily) {
		t.Errorf("mixed families: %v", err)
	}
}

func TestExpectationEncoding(t *testing.T) {
	x := Expectation{
		Kind: KindPASV, Src: client4, Dst: vip4, DstPort: 30000,
		To: netip.MustParseAddrPort("10.1.0.10:30000"), ControlPort: 40000, Deadline: 1 << 40,
	}
	b, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != ExpectationSize {
		t.Fatalf("%d bytes", len(b))
	}
	var y Expectation
	if err := y.UnmarshalBinary(b); err != nil || y != x {
		t.Fatalf("round trip: %+v, %v", y, err)
	}
	for _, bad := range [][]byte{b[:10], append(append([]byte{}, b...), 0)} {
		if err := y.UnmarshalBinary(bad); !errors.Is(err, ErrEncoding) {
			t.Errorf("%d bytes: %v", len(bad), err)
		}
	}
	b[1] = 5
	if err := y.UnmarshalBinary(b); !errors.Is(err, ErrEncoding) {
		t.Errorf("family 5: %v", err)
	}
}

func FuzzExpectationEncoding(f *testing.F) {
	x := Expectation{
		Kind: KindEPRT, Src: netip.MustParseAddr("fd01::10"), Dst: client6, DstPort: 41019,
		To: netip.MustParseAddrPort("[2001:db8::10]:20"), ControlPort: 40000, Deadline: 12345,
	}
	b, _ := x.MarshalBinary()
	f.Add(b)
	x = Expectation{Kind: KindPASV, Src: client4, Dst: vip4, DstPort: 1, To: netip.MustParseAddrPort("10.1.0.10:1")}
	b, _ = x.MarshalBinary()
	f.Add(b)
	f.Add(make([]byte, ExpectationSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		var x Expectation
		if err := x.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := x.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", x, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("encoding is not canonical:\n in  %x\n out %x", b, out)
		}
	})
}

func BenchmarkExpectationEncoding(b *testing.B) {
	x := Expectation{
		Kind: KindPASV, Src: client4, Dst: vip4, DstPort: 30000,
		To: netip.MustParseAddrPort("10.1.0.10:30000"), ControlPort: 40000, Deadline: 1 << 40,
	}
	var y Expectation
	for b.Loop() {
		buf, _ := x.MarshalBinary()
		if err := y.UnmarshalBinary(buf); err != nil {
			b.Fatal(err)
		}
	}
}
