package flow

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tandem-lb/tandem/test/netns"
)

// TestAttachDetachClose attaches in both modes, refuses a double attach,
// detaches, and checks that Close leaves no XDP program on the interface and
// no program or map alive in the kernel.
func TestAttachDetachClose(t *testing.T) {
	netns.RequireRoot(t)
	ns := netns.New(t)
	netns.Veth(t, ns, "tfx0", ns, "tfx1")
	xdpOn := func(ifname string) string {
		out, err := ns.Run("ip", "-d", "link", "show", "dev", ifname)
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, mode := range []string{"xdpgeneric", "xdpdrv", "xdp "} {
			if strings.Contains(out, mode) {
				return strings.TrimSpace(mode)
			}
		}
		return ""
	}
	for _, c := range []struct {
		mode XDPMode
		want string
	}{
		{XDPNative, "xdp"},
		{XDPGeneric, "xdpgeneric"},
	} {
		d, err := New(Config{TableSize: 13, MaxVServers: 2, XDPMode: c.mode})
		if err != nil {
			t.Fatal(err)
		}
		info, err := d.Program().Info()
		if err != nil {
			t.Fatal(err)
		}
		progID, _ := info.ID()
		minfo, err := d.objs.Flows.Info()
		if err != nil {
			t.Fatal(err)
		}
		mapID, _ := minfo.ID()
		if err := ns.Do(func() error { return d.Attach("tfx0") }); err != nil {
			t.Fatalf("attach mode %d: %v", c.mode, err)
		}
		if got := xdpOn("tfx0"); got != c.want {
			t.Errorf("mode %d: ip link shows %q, want %q", c.mode, got, c.want)
		}
		if err := ns.Do(func() error { return d.Attach("tfx0") }); !errors.Is(err, ErrAttached) {
			t.Errorf("second attach: %v, want ErrAttached", err)
		}
		if err := ns.Do(func() error { return d.Attach("tfx1") }); err != nil {
			t.Fatal(err)
		}
		if got := d.Attached(); len(got) != 2 {
			t.Errorf("Attached() = %v", got)
		}
		if err := d.Detach("tfx1"); err != nil {
			t.Fatal(err)
		}
		if got := xdpOn("tfx1"); got != "" {
			t.Errorf("after Detach: %q still attached", got)
		}
		// All or nothing: tfx1 is attached, then "tfnone" fails.
		if err := ns.Do(func() error { return d.Attach("tfx1", "tfnone") }); err == nil {
			t.Errorf("attach to a missing interface succeeded")
		}
		if got := xdpOn("tfx1"); got != "" || len(d.Attached()) != 1 {
			t.Errorf("after a failed Attach: tfx1 %q, attached %v", got, d.Attached())
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if got := xdpOn("tfx0"); got != "" {
			t.Errorf("after Close: %q still attached", got)
		}
		// The kernel frees objects after an RCU grace period.
		deadline := time.Now().Add(5 * time.Second)
		for {
			p, perr := ebpf.NewProgramFromID(progID)
			m, merr := ebpf.NewMapFromID(mapID)
			if perr == nil {
				p.Close()
			}
			if merr == nil {
				m.Close()
			}
			if perr != nil && merr != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after Close: program %d alive %v, flow map %d alive %v", progID, perr == nil, mapID, merr == nil)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
