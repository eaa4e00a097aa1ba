// Package netlink owns what tandemd changes in the kernel's network
// configuration besides the data plane: the VIP addresses on the loopback
// (or a configured interface), so the kernel answers for them, and the
// sysctls forwarding needs. Everything is remembered and undone on exit:
// tandemd removes only addresses it added, and restores every sysctl it set
// to the value it found.
package netlink

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNoInterface is returned when the VIP interface does not exist.
var ErrNoInterface = errors.New("vip interface not found")

// AddrHandle is the part of a netlink handle VIPs uses: the real one is
// *netlink.Handle (netlink.NewHandle, or NewHandleAt for a namespace).
type AddrHandle interface {
	LinkByName(name string) (vnl.Link, error)
	AddrAdd(link vnl.Link, addr *vnl.Addr) error
	AddrDel(link vnl.Link, addr *vnl.Addr) error
	AddrList(link vnl.Link, family int) ([]vnl.Addr, error)
}

// VIPs puts VIP addresses (as /32 or /128) on one interface, idempotently,
// and remembers which ones it added so that it never removes an address an
// operator configured. It is safe for concurrent use.
type VIPs struct {
	h    AddrHandle
	link vnl.Link

	mu      sync.Mutex
	added   map[netip.Addr]bool
	journal journal
}

// NewVIPs manages VIP addresses on interface ifname (tandemd uses "lo").
func NewVIPs(h AddrHandle, ifname string) (*VIPs, error) {
	link, err := h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrNoInterface, ifname, err)
	}
	return &VIPs{h: h, link: link, added: map[netip.Addr]bool{}}, nil
}

func hostAddr(a netip.Addr) *vnl.Addr {
	a = a.Unmap()
	p := netip.PrefixFrom(a, a.BitLen())
	ad := &vnl.Addr{IPNet: prefixToIPNet(p)}
	if a.Is6() {
		ad.Flags = unix.IFA_F_NODAD
	}
	return ad
}

func (v *VIPs) present(a netip.Addr) (bool, error) {
	fam := vnl.FAMILY_V4
	if a.Is6() {
		fam = vnl.FAMILY_V6
	}
	list, err := v.h.AddrList(v.link, fam)
	if err != nil {
		return false, fmt.Errorf("listing addresses on %s: %w", v.link.Attrs().Name, err)
	}
	for _, l := range list {
		got, ok := netip.AddrFromSlice(l.IP)
		ones, _ := l.Mask.Size()
		if ok && got.Unmap() == a && ones == a.BitLen() {
			return true, nil
		}
	}
	return false, nil
}

// WithJournal makes v remember what it added in the file at path, and
// adopts what a previous run that crashed left there: those addresses, if
// still on the interface, are tandemd's and go with RemoveAll.
func (v *VIPs) WithJournal(path string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.journal = journal{path}
	var left []netip.Addr
	ok, err := v.journal.load(&left)
	if err != nil || !ok {
		return err
	}
	for _, a := range left {
		present, err := v.present(a.Unmap())
		if err != nil {
			return err
		}
		if present {
			v.added[a.Unmap()] = true
		}
	}
	return v.saveLocked()
}

func (v *VIPs) saveLocked() error {
	list := make([]netip.Addr, 0, len(v.added))
	for a := range v.added {
		list = append(list, a)
	}
	slices.SortFunc(list, netip.Addr.Compare)
	return v.journal.save(list)
}

// Add puts a on the interface. If it is already there and tandemd did not
// put it there, it is left alone and not remembered.
func (v *VIPs) Add(a netip.Addr) error {
	a = a.Unmap()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.added[a] {
		return nil
	}
	ok, err := v.present(a)
	if err != nil || ok {
		return err
	}
	// Journal first: a crash between the two leaves a journal entry for an
	// address that is not there, which the next run skips.
	v.added[a] = true
	if err := v.saveLocked(); err != nil {
		delete(v.added, a)
		return err
	}
	if err := v.h.AddrAdd(v.link, hostAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
		delete(v.added, a)
		_ = v.saveLocked()
		return fmt.Errorf("adding vip %v to %s: %w", a, v.link.Attrs().Name, err)
	}
	return nil
}

// Remove takes a off the interface if tandemd added it.
func (v *VIPs) Remove(a netip.Addr) error {
	a = a.Unmap()
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.removeLocked(a)
}

func (v *VIPs) removeLocked(a netip.Addr) error {
	if !v.added[a] {
		return nil
	}
	if err := v.h.AddrDel(v.link, hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing vip %v from %s: %w", a, v.link.Attrs().Name, err)
	}
	delete(v.added, a)
	return v.saveLocked()
}

// Sync makes the set of VIPs tandemd added equal to want: it adds what is
// missing and removes what it added that is no longer wanted.
func (v *VIPs) Sync(want []netip.Addr) error {
	wanted := map[netip.Addr]bool{}
	var errs []error
	for _, a := range want {
		wanted[a.Unmap()] = true
		if err := v.Add(a); err != nil {
			errs = append(errs, err)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for a := range v.added {
		if !wanted[a] {
			if err := v.removeLocked(a); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Added returns the addresses tandemd added, sorted.
func (v *VIPs) Added() []netip.Addr {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]netip.Addr, 0, len(v.added))
	for a := range v.added {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// RemoveAll removes every address tandemd added (on exit).
func (v *VIPs) RemoveAll() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var errs []error
	for a := range v.added {
		if err := v.removeLocked(a); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, v.journal.remove())
	}
	return errors.Join(errs...)
}
