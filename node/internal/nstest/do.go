package nstest

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Netlink returns a netlink handle operating in namespace ns, closed on
// cleanup.
func Netlink(t testing.TB, ns string) *netlink.Handle {
	t.Helper()
	h, err := vnetns.GetFromName(ns)
	if err != nil {
		t.Fatalf("opening namespace %s: %v", ns, err)
	}
	t.Cleanup(func() { h.Close() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns, err)
	}
	t.Cleanup(nl.Close)
	return nl
}

// Do runs fn on an OS thread switched into namespace ns (files under
// /proc/sys/net opened there are the namespace's). Goroutines fn starts do
// not run in the namespace. A thread that cannot be switched back is
// discarded.
func Do(ns string, fn func() error) error {
	target, err := vnetns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // unlocked only once back home
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := vnetns.Set(target); err != nil {
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			if vnetns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			return
		}
		ferr := fn()
		if err := vnetns.Set(orig); err != nil {
			errc <- fmt.Errorf("leaving %s: %w", ns, err) // thread dies locked
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
