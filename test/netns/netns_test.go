package netns

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func listen(t *testing.T, n *NetNS, network, addr string) net.Listener {
	t.Helper()
	return n.Listen(network, addr)
}

// echoOnce accepts one connection on ln, sends back what it reads and
// reports the peer address.
func echoOnce(ln net.Listener) <-chan string {
	peer := make(chan string, 1)
	go func() {
		defer close(peer)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		peer <- c.RemoteAddr().String()
		io.Copy(c, c)
	}()
	return peer
}

// roundTrip dials addr from inside n, writes a message, and checks the echo.
func roundTrip(t *testing.T, n *NetNS, network, addr string) {
	t.Helper()
	c := n.Dial(network, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("tandem " + addr)
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("writing to %s: %v", addr, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading echo from %s: %v", addr, err)
	}
	if string(got) != string(msg) {
		t.Fatalf("echo from %s = %q, want %q", addr, got, msg)
	}
}

func TestVethTCPBetweenNamespaces(t *testing.T) {
	RequireRoot(t)
	a, b := New(t), New(t)
	Veth(t, a, "eth0", b, "eth0")
	a.AddAddr("eth0", "10.99.0.1/24")
	b.AddAddr("eth0", "10.99.0.2/24")
	a.AddAddr("eth0", "fd99::1/64")
	b.AddAddr("eth0", "fd99::2/64")

	for _, tc := range []struct{ listen, dial, client string }{
		{"10.99.0.2:7000", "10.99.0.2:7000", "10.99.0.1"},
		{"[fd99::2]:7000", "[fd99::2]:7000", "fd99::1"},
	} {
		ln := listen(t, b, "tcp", tc.listen)
		peer := echoOnce(ln)
		roundTrip(t, a, "tcp", tc.dial)
		ap, err := netip.ParseAddrPort(<-peer)
		if err != nil {
			t.Fatal(err)
		}
		if ap.Addr().String() != tc.client {
			t.Errorf("server saw client %s, want %s", ap.Addr(), tc.client)
		}
	}

	// The addresses live in the namespaces only: the host cannot bind them
	// (checked without sending traffic out of the test's namespaces).
	if ln, err := net.Listen("tcp", "10.99.0.2:0"); err == nil {
		ln.Close()
		t.Error("10.99.0.2 is bindable in the host namespace")
	}
}

// A routed path a - r - b exercises AddRoute and Sysctl.
func TestRoutedPath(t *testing.T) {
	RequireRoot(t)
	a, r, b := New(t), New(t), New(t)
	Veth(t, a, "eth0", r, "ra")
	Veth(t, r, "rb", b, "eth0")
	a.AddAddr("eth0", "10.98.1.2/24")
	r.AddAddr("ra", "10.98.1.1/24")
	r.AddAddr("rb", "10.98.2.1/24")
	b.AddAddr("eth0", "10.98.2.2/24")
	a.AddRoute("default", "10.98.1.1", "")
	b.AddRoute("10.98.1.0/24", "10.98.2.1", "eth0")
	r.Sysctl("net.ipv4.ip_forward", "1")
	if got := r.ReadSysctl("net.ipv4.ip_forward"); got != "1" {
		t.Fatalf("ip_forward in r = %q after setting it", got)
	}
	if got := a.ReadSysctl("net.ipv4.ip_forward"); got != "0" {
		t.Errorf("ip_forward in a = %q: the sysctl leaked out of r", got)
	}

	ln := listen(t, b, "tcp", "10.98.2.2:7001")
	peer := echoOnce(ln)
	roundTrip(t, a, "tcp", "10.98.2.2:7001")
	if p := <-peer; !strings.HasPrefix(p, "10.98.1.2:") {
		t.Errorf("server saw client %s, want 10.98.1.2", p)
	}

	out, err := a.Run("ip", "route", "show", "default")
	if err != nil || !strings.Contains(out, "via 10.98.1.1") {
		t.Errorf("default route in a: %q, %v", out, err)
	}
}

func TestVethWithHost(t *testing.T) {
	RequireRoot(t)
	host, a := Host(t), New(t)
	name := UniqueLinkName("h")
	Veth(t, host, name, a, "eth0")
	// A random /30 of 100.64.0.0/10, so that parallel test processes do
	// not add the same route to the shared host namespace.
	r := rand.Uint32N(1 << 20)
	base := netip.AddrFrom4([4]byte{100, 64 | byte(r>>14), byte(r >> 6), byte(r << 2)})
	hostAddr, nsAddr := base.Next(), base.Next().Next()
	host.AddAddr(name, hostAddr.String()+"/30")
	a.AddAddr("eth0", nsAddr.String()+"/30")
	target := netip.AddrPortFrom(nsAddr, 7002).String()
	ln := listen(t, a, "tcp", target)
	peer := echoOnce(ln)
	roundTrip(t, host, "tcp", target)
	if p := <-peer; !strings.HasPrefix(p, hostAddr.String()+":") {
		t.Errorf("server saw client %s, want %s", p, hostAddr)
	}
}

func nsInode(t *testing.T) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatalf("stat own namespace: %v", err)
	}
	return st.Ino
}

func TestDoRunsInsideAndRestores(t *testing.T) {
	RequireRoot(t)
	n := New(t)
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+n.Name, &st); err != nil {
		t.Fatal(err)
	}
	want := st.Ino
	host := nsInode(t)
	for range 20 {
		var inside uint64
		if err := n.Do(func() error { inside = nsInode(t); return nil }); err != nil {
			t.Fatal(err)
		}
		if inside != want {
			t.Fatalf("Do ran in namespace inode %d, want %d", inside, want)
		}
	}
	sentinel := errors.New("from fn")
	if err := n.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	// Threads released by Do are back in the host namespace: many
	// goroutines, each locked to a thread, all see the host.
	done := make(chan uint64)
	for range 50 {
		go func() {
			var st syscall.Stat_t
			syscall.Stat("/proc/thread-self/ns/net", &st)
			done <- st.Ino
		}()
	}
	for range 50 {
		if ino := <-done; ino != host {
			t.Fatalf("a goroutine ran in namespace inode %d, host is %d", ino, host)
		}
	}
}

func TestCleanupLeavesNothing(t *testing.T) {
	RequireRoot(t)
	var name, hostLink string
	var pid int
	t.Run("inner", func(t *testing.T) {
		a, b := New(t), New(t)
		name = a.Name
		hostLink = UniqueLinkName("c")
		Veth(t, Host(t), hostLink, a, "eth0")
		Veth(t, a, "eth1", b, "eth1")
		p := a.Start("sleep", "1000")
		pid = p.Cmd.Process.Pid
		if !Exists(name) {
			t.Fatalf("namespace %s missing while in use", name)
		}
	})
	if Exists(name) {
		t.Errorf("namespace %s left behind", name)
	}
	if _, err := os.Stat("/sys/class/net/" + hostLink); err == nil {
		t.Errorf("host link %s left behind", hostLink)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after cleanup (kill 0: %v)", pid, err)
	}
	left, err := List(Prefix + strconv.Itoa(os.Getpid()) + "-")
	if err != nil {
		t.Fatal(err)
	}
	// Other tests of this process may run in parallel; this one must not
	// have left its own.
	for _, l := range left {
		if l == name {
			t.Errorf("List still shows %s", l)
		}
	}
}

func TestStartRunsInNamespace(t *testing.T) {
	RequireRoot(t)
	n := New(t)
	Veth(t, n, "tv0", n, "tv1")
	p := n.Start("ip", "-o", "link", "show")
	if err := p.Wait(); err != nil {
		t.Fatalf("ip link in %s: %v: %s", n, err, p.Output())
	}
	out := p.Output()
	for _, want := range []string{"lo:", "tv0@tv1", "tv1@tv0"} {
		if !strings.Contains(out, want) {
			t.Errorf("ip link in %s lacks %q:\n%s", n, want, out)
		}
	}
	if got := strings.Count(strings.TrimSpace(out), "\n") + 1; got != 3 {
		t.Errorf("%s has %d links, want 3:\n%s", n, got, out)
	}

	long := n.Start("sh", "-c", "sleep 1000 & sleep 1000")
	if long.Exited() {
		t.Fatal("sleep exited at once")
	}
	if err := long.Kill(); err != nil {
		t.Fatal(err)
	}
	if !long.Exited() {
		t.Fatal("process still running after Kill")
	}
}

func TestOffload(t *testing.T) {
	RequireRoot(t)
	n := New(t)
	Veth(t, n, "ov0", n, "ov1")
	n.DisableTxChecksum("ov0")
	n.EnableGRO("ov1")
	n.Offload("ov1", "gro", "off", "tso", "off")
	n.EnableGRO("ov1")
	out0, err := n.Run("ethtool", "-k", "ov0")
	if err != nil {
		t.Fatal(err)
	}
	out1, err := n.Run("ethtool", "-k", "ov1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ out, want string }{
		{out0, "tx-checksumming: off"},
		{out1, "generic-receive-offload: on"},
		{out1, "tcp-segmentation-offload: off"},
	} {
		if !strings.Contains(c.out, c.want) {
			t.Errorf("ethtool -k lacks %q:\n%s", c.want, c.out)
		}
	}
}

func TestVethNameChecked(t *testing.T) {
	RequireRoot(t)
	n := New(t)
	ft := &fatalRecorder{TB: t}
	func() {
		defer func() { recover() }()
		Veth(ft, n, "this-name-is-too-long", n, "x")
	}()
	if !strings.Contains(ft.msg, ErrLinkName.Error()) {
		t.Fatalf("a 21-byte name gave %q, want %v", ft.msg, ErrLinkName)
	}
}

// fatalRecorder records Fatalf instead of failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f.msg)
}

func TestUniqueLinkName(t *testing.T) {
	seen := map[string]bool{}
	for _, tag := range []string{"", "a", "tag", "toolongtag"} {
		for range 1000 {
			name := UniqueLinkName(tag)
			if len(name) > MaxLinkName || !strings.HasPrefix(name, Prefix) {
				t.Fatalf("UniqueLinkName(%q) = %q", tag, name)
			}
			if seen[name] {
				t.Fatalf("UniqueLinkName repeated %q", name)
			}
			seen[name] = true
		}
	}
}

func TestUDPAndDialFailure(t *testing.T) {
	RequireRoot(t)
	a, b := New(t), New(t)
	Veth(t, a, "eth0", b, "eth0")
	a.AddAddr("eth0", "10.96.0.1/24")
	b.AddAddr("eth0", "10.96.0.2/24")
	srv := b.ListenPacket("udp", "10.96.0.2:7003")
	cli := a.ListenPacket("udp", "10.96.0.1:0")
	srv.SetDeadline(time.Now().Add(10 * time.Second))
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	dst := &net.UDPAddr{IP: net.IPv4(10, 96, 0, 2), Port: 7003}
	if _, err := cli.WriteTo([]byte("ping"), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	nr, from, err := srv.ReadFrom(buf)
	if err != nil || string(buf[:nr]) != "ping" {
		t.Fatalf("server read %q, %v", buf[:nr], err)
	}
	if from.(*net.UDPAddr).IP.String() != "10.96.0.1" {
		t.Errorf("datagram from %v, want 10.96.0.1", from)
	}
	// Nothing listens on 7004 in b: the connection is refused.
	if c, err := a.DialErr("tcp", "10.96.0.2:7004", 2*time.Second); err == nil {
		c.Close()
		t.Fatal("dial to a closed port succeeded")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port: %v, want connection refused", err)
	}
}

func TestRemoveStale(t *testing.T) {
	RequireRoot(t)
	// A pid that no longer exists: a process that has exited.
	p := Host(t).Start("true")
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	dead := p.Cmd.Process.Pid
	stale := fmt.Sprintf("%s%d-stale%d", Prefix, dead, os.Getpid())
	if out, err := command("ip", "netns", "add", stale); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { command("ip", "netns", "delete", stale) })
	live := New(t)

	removed, err := RemoveStale()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, stale) || Exists(stale) {
		t.Errorf("RemoveStale removed %v; %s should be gone", removed, stale)
	}
	if slices.Contains(removed, live.Name) || !Exists(live.Name) {
		t.Errorf("RemoveStale removed the live namespace %s", live.Name)
	}
}

func TestOwnerPid(t *testing.T) {
	for name, want := range map[string]int{
		"th123-abc": 123, "th1-x": 1, "th-1-x": 0, "th12": 0, "thabc-1": 0, "x12-a": 0, "th0-a": 0,
	} {
		pid, ok := ownerPid(name)
		if ok != (want != 0) || pid != want {
			t.Errorf("ownerPid(%q) = %d, %v; want %d", name, pid, ok, want)
		}
	}
}

func TestWithSubtests(t *testing.T) {
	RequireRoot(t)
	parent := New(t)
	Veth(t, parent, "sa", parent, "sb")
	for _, link := range []string{"sa", "sb"} {
		t.Run(link, func(t *testing.T) {
			n := parent.With(t)
			n.AddAddr(link, "fd98::"+map[string]string{"sa": "1", "sb": "2"}[link]+"/64")
			if n.Link(link).Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("%s is not up", link)
			}
		})
	}
	out, err := parent.Run("ip", "-6", "addr", "show", "dev", "sb")
	if err != nil || !strings.Contains(out, "fd98::2/64") {
		t.Errorf("address added in a subtest missing: %q, %v", out, err)
	}
}
