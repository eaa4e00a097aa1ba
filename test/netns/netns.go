// Package netns builds throw-away network namespaces for privileged tests:
// namespaces removed by tb.Cleanup, veth pairs between them, addresses,
// routes, sysctls, offload settings, Go code and commands run inside them.
//
// Every helper that takes a testing.TB fails the test on error and must be
// called from the test's goroutine; the ones that return an error (Do,
// Proc.Wait) may be called from anywhere.
//
// Names are unique per test process without shared state: a namespace is
// called "th<pid>-<random>", and UniqueLinkName gives interface names of at
// most 15 bytes for links that live in a shared namespace (the host). Links
// inside a namespace of this package can have any name.
package netns

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Prefix starts every namespace and generated link name of this package, so
// leftovers of a crashed test are easy to find (`ip netns | grep ^th`).
const Prefix = "th"

// CommandTimeout bounds each ip/ethtool invocation the helpers make.
const CommandTimeout = 20 * time.Second

// MaxLinkName is the longest interface name Linux accepts (IFNAMSIZ - 1).
const MaxLinkName = 15

// runDir is where iproute2 keeps named namespaces.
const runDir = "/run/netns"

var (
	// ErrLinkName means an interface name is empty or longer than
	// MaxLinkName bytes.
	ErrLinkName = errors.New("interface name must be 1 to 15 bytes")
	// ErrRestoreNamespace means a thread could not be returned to its
	// original namespace after Do; the thread was discarded.
	ErrRestoreNamespace = errors.New("restoring the original network namespace")
)

// RequireRoot skips the test, with the reason, when it does not run as root,
// when BPF (XDP programs) is unavailable, or under -short.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs root and BPF: skipped under -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root and BPF: not running as root")
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		tb.Skipf("needs root and BPF: XDP programs unavailable: %v", err)
	}
}

// NetNS is a network namespace. One made by New is removed, with every link
// in it, when the test ends; the one from Host is the test's own namespace
// and is left alone.
type NetNS struct {
	// Name is the namespace's name under /run/netns, "" for the host.
	Name   string
	tb     testing.TB
	handle vnetns.NsHandle
	nl     *netlink.Handle
}

// New creates a namespace with loopback up, removed by tb.Cleanup after
// everything registered later (processes, links) is cleaned up.
func New(tb testing.TB) *NetNS {
	tb.Helper()
	var name string
	for attempt := 0; ; attempt++ {
		name = fmt.Sprintf("%s%d-%s", Prefix, os.Getpid(), randomSuffix(8))
		out, err := command("ip", "netns", "add", name)
		if err == nil {
			break
		}
		if !Exists(name) || attempt >= 3 {
			tb.Fatalf("creating network namespace %s: %v: %s", name, err, out)
		}
	}
	n := &NetNS{Name: name, tb: tb, handle: vnetns.None()}
	tb.Cleanup(func() {
		n.close()
		if out, err := command("ip", "netns", "delete", name); err != nil {
			tb.Errorf("deleting network namespace %s: %v: %s", name, err, out)
		}
	})
	h, err := vnetns.GetFromName(name)
	if err != nil {
		tb.Fatalf("opening network namespace %s: %v", name, err)
	}
	n.handle = h
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.Up("lo")
	return n
}

// Host returns the namespace the test process runs in. Links created in it
// by Veth are deleted on cleanup; the namespace itself is not.
func Host(tb testing.TB) *NetNS {
	tb.Helper()
	h, err := vnetns.GetFromPid(os.Getpid())
	if err != nil {
		tb.Fatalf("opening the host network namespace: %v", err)
	}
	n := &NetNS{tb: tb, handle: h}
	tb.Cleanup(n.close)
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		tb.Fatalf("netlink handle in the host namespace: %v", err)
	}
	return n
}

func (n *NetNS) close() {
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() {
		n.handle.Close()
		n.handle = vnetns.None()
	}
}

// With returns a view of n that reports failures to tb, for subtests using
// a namespace their parent made (t.Fatal must run on the subtest's
// goroutine). The namespace still lives until the parent's cleanup.
func (n *NetNS) With(tb testing.TB) *NetNS {
	c := *n
	c.tb = tb
	return &c
}

// String names the namespace for messages.
func (n *NetNS) String() string {
	if n.Name == "" {
		return "host namespace"
	}
	return "namespace " + n.Name
}

// Exists reports whether a named namespace exists under /run/netns.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(runDir, name))
	return err == nil
}

// List returns the names of the namespaces under /run/netns that start with
// prefix, for leak checks.
func List(prefix string) ([]string, error) {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", runDir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// UniqueLinkName returns an interface name of at most 15 bytes, unique for
// practical purposes: Prefix, up to 4 bytes of tag, the process id in base
// 36, and random base-36 characters to fill the rest.
func UniqueLinkName(tag string) string {
	if len(tag) > 4 {
		tag = tag[:4]
	}
	base := Prefix + tag + strconv.FormatInt(int64(os.Getpid()), 36)
	if len(base) >= MaxLinkName-3 {
		base = base[:MaxLinkName-4]
	}
	return base + randomSuffix(MaxLinkName-len(base))
}

func randomSuffix(n int) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	for i := range b {
		v, err := rand.Int(rand.Reader, big.NewInt(int64(len(digits))))
		if err != nil {
			panic(fmt.Sprintf("reading random bytes: %v", err)) // crypto/rand does not fail on Linux
		}
		b[i] = digits[v.Int64()]
	}
	return string(b)
}

// Netlink returns the netlink handle bound to the namespace, for what the
// helpers do not cover. It is closed on cleanup.
func (n *NetNS) Netlink() *netlink.Handle { return n.nl }

// Handle returns the namespace's file handle (open until cleanup).
func (n *NetNS) Handle() vnetns.NsHandle { return n.handle }

// Do runs fn on an OS thread switched into the namespace, and returns fn's
// error. Sockets fn opens belong to the namespace for their whole life, so
// fn can listen or dial and hand the connection back. Goroutines fn starts
// do not run in the namespace. If the thread cannot be switched back, it is
// discarded (never reused by the Go runtime) and Do returns an error
// wrapping ErrRestoreNamespace.
func (n *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Locked for good until the thread is known to be back in its
		// namespace: a goroutine that exits locked takes its thread down.
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("reading the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := vnetns.Set(n.handle); err != nil {
			if rerr := vnetns.Set(orig); rerr != nil {
				errc <- fmt.Errorf("entering %s: %w; %w: %w", n, err, ErrRestoreNamespace, rerr)
				return
			}
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", n, err)
			return
		}
		ferr := fn()
		if err := vnetns.Set(orig); err != nil {
			errc <- fmt.Errorf("leaving %s: %w: %w", n, ErrRestoreNamespace, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Link returns the interface called name in the namespace.
func (n *NetNS) Link(name string) netlink.Link {
	n.tb.Helper()
	l, err := n.nl.LinkByName(name)
	if err != nil {
		n.tb.Fatalf("finding link %s in %s: %v", name, n, err)
	}
	return l
}

// Up sets an interface up.
func (n *NetNS) Up(link string) {
	n.tb.Helper()
	if err := n.nl.LinkSetUp(n.Link(link)); err != nil {
		n.tb.Fatalf("setting %s up in %s: %v", link, n, err)
	}
}

// Down sets an interface down.
func (n *NetNS) Down(link string) {
	n.tb.Helper()
	if err := n.nl.LinkSetDown(n.Link(link)); err != nil {
		n.tb.Fatalf("setting %s down in %s: %v", link, n, err)
	}
}

// AddAddr adds an address in CIDR form ("10.0.0.1/24", "fd00::1/64") to an
// interface. IPv6 addresses skip duplicate address detection, so they are
// usable at once.
func (n *NetNS) AddAddr(link, cidr string) {
	n.tb.Helper()
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		n.tb.Fatalf("parsing address %q: %v", cidr, err)
	}
	if addr.IP.To4() == nil {
		addr.Flags |= 0x02 // IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(n.Link(link), addr); err != nil {
		n.tb.Fatalf("adding %s to %s in %s: %v", cidr, link, n, err)
	}
}

// AddRoute adds a route to dst ("default", "default6", or a CIDR) via gw
// ("" for a directly connected route) out of link ("" to let gw decide).
func (n *NetNS) AddRoute(dst, gw, link string) {
	n.tb.Helper()
	args := []string{"route", "add", dst}
	switch dst {
	case "default6":
		args = []string{"-6", "route", "add", "default"}
	case "default":
		if strings.Contains(gw, ":") {
			args = []string{"-6", "route", "add", "default"}
		}
	}
	if gw != "" {
		args = append(args, "via", gw)
	}
	if link != "" {
		args = append(args, "dev", link)
	}
	n.ip(args...)
}

// Sysctl sets a sysctl of the namespace, e.g. Sysctl("net.ipv4.ip_forward",
// "1"). Only the net.* tree is per namespace.
func (n *NetNS) Sysctl(key, value string) {
	n.tb.Helper()
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	err := n.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		n.tb.Fatalf("setting %s=%s in %s: %v", key, value, n, err)
	}
}

// ReadSysctl reads a sysctl of the namespace.
func (n *NetNS) ReadSysctl(key string) string {
	n.tb.Helper()
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	var b []byte
	err := n.Do(func() (err error) { b, err = os.ReadFile(path); return err })
	if err != nil {
		n.tb.Fatalf("reading %s in %s: %v", key, n, err)
	}
	return strings.TrimSpace(string(b))
}

// Offload changes ethtool features of an interface, as
// `ethtool -K link settings...`, e.g. Offload("veth0", "tx", "off", "gro", "on").
func (n *NetNS) Offload(link string, settings ...string) {
	n.tb.Helper()
	args := append([]string{"-K", link}, settings...)
	if out, err := n.Run("ethtool", args...); err != nil {
		n.tb.Fatalf("ethtool %s in %s: %v: %s", strings.Join(args, " "), n, err, out)
	}
}

// DisableTxChecksum turns transmit checksum offload off, so that frames an
// XDP program rewrites leave the sender with complete checksums.
func (n *NetNS) DisableTxChecksum(link string) {
	n.tb.Helper()
	n.Offload(link, "tx", "off")
}

// EnableGRO turns GRO on, which gives a veth the NAPI context that XDP
// redirects into it need.
func (n *NetNS) EnableGRO(link string) {
	n.tb.Helper()
	n.Offload(link, "gro", "on")
}

// Veth creates a veth pair with end aName in a and end bName in b, both up,
// and deletes it on cleanup. a and b may be the same namespace, and either
// may be the host.
func Veth(tb testing.TB, a *NetNS, aName string, b *NetNS, bName string) {
	tb.Helper()
	for _, name := range []string{aName, bName} {
		if len(name) == 0 || len(name) > MaxLinkName {
			tb.Fatalf("veth end %q: %v", name, ErrLinkName)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(b.handle),
	}
	if err := a.nl.LinkAdd(veth); err != nil {
		tb.Fatalf("creating veth %s (%s) - %s (%s): %v", aName, a, bName, b, err)
	}
	tb.Cleanup(func() {
		// Deleting one end deletes both; the pair may already be gone with
		// its namespace.
		if a.nl == nil {
			return
		}
		if l, err := a.nl.LinkByName(aName); err == nil {
			if err := a.nl.LinkDel(l); err != nil {
				tb.Errorf("deleting veth %s in %s: %v", aName, a, err)
			}
		}
	})
	a.Up(aName)
	b.Up(bName)
}

// Run runs a command in the namespace (through `ip netns exec`, or directly
// for the host) and returns its combined output; it is killed after
// CommandTimeout.
func (n *NetNS) Run(name string, args ...string) (string, error) {
	out, err := command(n.argv(name, args...)...)
	return string(out), err
}

func (n *NetNS) ip(args ...string) {
	n.tb.Helper()
	if out, err := n.Run("ip", args...); err != nil {
		n.tb.Fatalf("ip %s in %s: %v: %s", strings.Join(args, " "), n, err, out)
	}
}

func (n *NetNS) argv(name string, args ...string) []string {
	if n.Name == "" {
		return append([]string{name}, args...)
	}
	return append([]string{"ip", "netns", "exec", n.Name, name}, args...)
}

func command(argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("running %s: %w", strings.Join(argv, " "), err)
	}
	return out, nil
}
