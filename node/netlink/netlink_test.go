package netlink

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"testing"

	vnl "github.com/vishvananda/netlink"

	"github.com/tandem-lb/tandem/node/internal/nstest"
)

func addrsOn(t *testing.T, h *vnl.Handle, ifname string) map[netip.Prefix]bool {
	t.Helper()
	link, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	list, err := h.AddrList(link, vnl.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]bool{}
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		out[netip.PrefixFrom(ip.Unmap(), ones)] = true
	}
	return out
}

func TestVIPsInNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, "nl")
	h := nstest.Netlink(t, ns)
	// An operator's address: tandemd must never remove it.
	nstest.InNS(t, ns, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")

	v, err := NewVIPs(h, "lo")
	if err != nil {
		t.Fatal(err)
	}
	vip4, vip6, operator := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 2; i++ { // twice: idempotent
		for _, a := range []netip.Addr{vip4, vip6, operator} {
			if err := v.Add(a); err != nil {
				t.Fatalf("Add(%v) #%d: %v", a, i, err)
			}
		}
	}
	got := addrsOn(t, h, "lo")
	for _, p := range []string{"203.0.113.10/32", "2001:db8::10/128", "192.0.2.1/32"} {
		if !got[netip.MustParsePrefix(p)] {
			t.Errorf("%s not on lo: %v", p, got)
		}
	}
	if want := []netip.Addr{vip4, vip6}; !reflect.DeepEqual(v.Added(), want) {
		t.Errorf("Added = %v, want %v (the operator's address is not ours)", v.Added(), want)
	}

	if err := v.Sync([]netip.Addr{vip4, operator}); err != nil {
		t.Fatal(err)
	}
	got = addrsOn(t, h, "lo")
	if got[netip.MustParsePrefix("2001:db8::10/128")] || !got[netip.MustParsePrefix("203.0.113.10/32")] {
		t.Errorf("after Sync: %v", got)
	}

	// Someone else removed our VIP meanwhile: removing it again is fine.
	nstest.InNS(t, ns, "ip", "addr", "del", "203.0.113.10/32", "dev", "lo")
	if err := v.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	got = addrsOn(t, h, "lo")
	if got[netip.MustParsePrefix("203.0.113.10/32")] || !got[netip.MustParsePrefix("192.0.2.1/32")] {
		t.Errorf("after RemoveAll: %v (the operator's 192.0.2.1/32 must stay)", got)
	}
	if len(v.Added()) != 0 {
		t.Errorf("Added after RemoveAll = %v", v.Added())
	}

	if _, err := NewVIPs(h, "nosuchif0"); !errors.Is(err, ErrNoInterface) {
		t.Errorf("NewVIPs(missing) = %v, want ErrNoInterface", err)
	}
}

func TestSysctlsInNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, "sc")
	nstest.Veth(t, ns, nil, nstest.NewNS(t, "sd"), nil)
	link := ""
	for name := range addrsLinks(t, nstest.Netlink(t, ns)) {
		link = name
	}
	settings := DataPathSysctls(link, link, "lo")
	if len(settings) != 6 {
		t.Fatalf("settings = %v (the interface must appear once)", settings)
	}
	err := nstest.Do(ns, func() error {
		fs := ProcSys{}
		before := map[string]string{}
		for _, s := range settings {
			v, err := fs.ReadSysctl(s.Name)
			if err != nil {
				return err
			}
			before[s.Name] = v
		}
		if err := fs.WriteSysctl("net.ipv4.conf."+link+".rp_filter", "2"); err != nil {
			return err
		}
		before["net.ipv4.conf."+link+".rp_filter"] = "2"
		sc := NewSysctls(fs)
		if err := sc.Apply(settings); err != nil {
			return err
		}
		for _, s := range settings {
			if v, _ := fs.ReadSysctl(s.Name); v != s.Value {
				t.Errorf("%s = %q after Apply, want %q", s.Name, v, s.Value)
			}
		}
		if err := sc.Restore(); err != nil {
			return err
		}
		for name, want := range before {
			if v, _ := fs.ReadSysctl(name); v != want {
				t.Errorf("%s = %q after Restore, want %q", name, v, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func addrsLinks(t *testing.T, h *vnl.Handle) map[string]bool {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			out[l.Attrs().Name] = true
		}
	}
	return out
}

type fakeSysctls struct {
	vals   map[string]string
	writes []Sysctl
	fail   string
}

func (f *fakeSysctls) ReadSysctl(name string) (string, error) {
	v, ok := f.vals[name]
	if !ok {
		return "", errors.New("no such sysctl " + name)
	}
	return v, nil
}

func (f *fakeSysctls) WriteSysctl(name, value string) error {
	if name == f.fail {
		return errors.New("refused")
	}
	f.vals[name] = value
	f.writes = append(f.writes, Sysctl{name, value})
	return nil
}

func TestSysctlsRestoreOnlyWhatChanged(t *testing.T) {
	fs := &fakeSysctls{vals: map[string]string{"a": "0", "b": "1", "c": "2"}, fail: "c"}
	sc := NewSysctls(fs)
	err := sc.Apply([]Sysctl{{"a", "1"}, {"b", "1"}, {"c", "0"}})
	if err == nil {
		t.Fatal("Apply succeeded although c refused")
	}
	if err := sc.Restore(); err != nil {
		t.Fatal(err)
	}
	want := []Sysctl{{"a", "1"}, {"a", "0"}} // b was already 1: untouched
	if !reflect.DeepEqual(fs.writes, want) {
		t.Errorf("writes = %v, want %v", fs.writes, want)
	}
}

// TestSysctlsAfterCrash: a run that crashed left its journal; the next run
// restores the values found before the first run, not the crashed run's.
func TestSysctlsAfterCrash(t *testing.T) {
	path := t.TempDir() + "/sysctls.json"
	fs := &fakeSysctls{vals: map[string]string{"net.ipv4.ip_forward": "0", "x": "5"}}
	first := NewSysctls(fs)
	if err := first.WithJournal(path); err != nil {
		t.Fatal(err)
	}
	if err := first.Apply([]Sysctl{{"net.ipv4.ip_forward", "1"}, {"x", "6"}}); err != nil {
		t.Fatal(err)
	}
	// first crashes: no Restore.
	second := NewSysctls(fs)
	if err := second.WithJournal(path); err != nil {
		t.Fatal(err)
	}
	if err := second.Apply([]Sysctl{{"net.ipv4.ip_forward", "1"}, {"x", "7"}}); err != nil {
		t.Fatal(err)
	}
	if err := second.Restore(); err != nil {
		t.Fatal(err)
	}
	if fs.vals["net.ipv4.ip_forward"] != "0" || fs.vals["x"] != "5" {
		t.Errorf("after restore: %v, want the values from before the crashed run", fs.vals)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left after a clean restore: %v", err)
	}
}

// TestVIPsAfterCrash: addresses a crashed run added are adopted by the next
// run and removed on its exit; an operator's address is not.
func TestVIPsAfterCrash(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, "nj")
	h := nstest.Netlink(t, ns)
	path := t.TempDir() + "/vips.json"
	nstest.InNS(t, ns, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
	vip := netip.MustParseAddr("203.0.113.10")

	first, err := NewVIPs(h, "lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := first.WithJournal(path); err != nil {
		t.Fatal(err)
	}
	if err := first.Add(vip); err != nil {
		t.Fatal(err)
	}
	if err := first.Add(netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	// first crashes.
	second, err := NewVIPs(h, "lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := second.WithJournal(path); err != nil {
		t.Fatal(err)
	}
	if got := second.Added(); len(got) != 1 || got[0] != vip {
		t.Fatalf("adopted %v, want [%v]", got, vip)
	}
	if err := second.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	got := addrsOn(t, h, "lo")
	if got[netip.MustParsePrefix("203.0.113.10/32")] || !got[netip.MustParsePrefix("192.0.2.1/32")] {
		t.Errorf("after RemoveAll: %v", got)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left after RemoveAll: %v", err)
	}
}
