package flow

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Tables are double-buffered: each vserver has two halves of M slots in one
// flat BPF array, at ((id*2 + half) * M). The table_active word of a vserver
// holds (epoch << 1) | active half. SetTable writes the idle half, then
// replaces that single aligned word, so a packet reads either the old table
// or the new one, never a half-written one.

// SetTable writes slots (backend ids, 0 = no backend) as the vserver's new
// table and makes it active. It returns the table's epoch, one more than the
// previous one (31 bits, wrapping).
func (d *Datapath) SetTable(vsID uint32, slots []uint32) (epoch uint32, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, ErrClosed
	}
	if _, ok := d.vservers[vsID]; !ok {
		return 0, fmt.Errorf("setting table of vserver %d: %w", vsID, ErrUnknownVServer)
	}
	if uint32(len(slots)) != d.cfg.TableSize {
		return 0, fmt.Errorf("%w: table of vserver %d has %d slots, the data plane was loaded with M = %d", ErrInvalidArgument, vsID, len(slots), d.cfg.TableSize)
	}
	for i, id := range slots {
		if id == 0 {
			continue
		}
		if _, ok := d.backends[id]; !ok {
			return 0, fmt.Errorf("setting table of vserver %d: slot %d names backend %d: %w", vsID, i, id, ErrUnknownBackend)
		}
	}
	var word uint32
	if err := d.objs.TableActive.Lookup(&vsID, &word); err != nil {
		return 0, fmt.Errorf("reading active table of vserver %d: %w", vsID, err)
	}
	idle := 1 - word&1
	if err := d.writeHalf(vsID, idle, slots); err != nil {
		return 0, err
	}
	epoch = (word>>1 + 1) & (1<<31 - 1)
	word = epoch<<1 | idle
	if err := d.objs.TableActive.Update(&vsID, &word, ebpf.UpdateAny); err != nil {
		return 0, fmt.Errorf("activating table of vserver %d: %w", vsID, err)
	}
	// hot entries of untracked flows copied the old table's backend
	if err := d.bumpGen(); err != nil {
		return 0, err
	}
	return epoch, nil
}

// Table returns the vserver's active table and its epoch, read back from the
// kernel: what new flows are hashed onto.
func (d *Datapath) Table(vsID uint32) (slots []uint32, epoch uint32, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, 0, ErrClosed
	}
	if vsID >= d.cfg.MaxVServers {
		return nil, 0, fmt.Errorf("%w: vserver id %d", ErrInvalidArgument, vsID)
	}
	var word uint32
	if err := d.objs.TableActive.Lookup(&vsID, &word); err != nil {
		return nil, 0, fmt.Errorf("reading active table of vserver %d: %w", vsID, err)
	}
	m := d.cfg.TableSize
	base := (vsID*2 + word&1) * m
	slots = make([]uint32, m)
	// One lookup per slot: array batch lookups start at index 0, not at
	// base, and Table is not a hot path.
	for i := uint32(0); i < m; i++ {
		k := base + i
		if err := d.objs.Tables.Lookup(&k, &slots[i]); err != nil {
			return nil, 0, fmt.Errorf("reading table of vserver %d: %w", vsID, err)
		}
	}
	return slots, word >> 1, nil
}

func (d *Datapath) writeHalf(vsID, half uint32, slots []uint32) error {
	base := (vsID*2 + half) * d.cfg.TableSize
	keys := make([]uint32, len(slots))
	for i := range keys {
		keys[i] = base + uint32(i)
	}
	if _, err := d.objs.Tables.BatchUpdate(keys, slots, nil); err != nil {
		return fmt.Errorf("writing table half %d of vserver %d: %w", half, vsID, err)
	}
	return nil
}
