package node

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/flow"
)

// FlowTables is what the daemon needs of the data plane's maps;
// *flow.Datapath implements it. Implementations are safe for concurrent
// use.
type FlowTables interface {
	SetVServer(v flow.VServer) error
	DeleteVServer(id uint32) error
	SetBackend(b flow.Backend) error
	DeleteBackend(id uint32) error
	SetReverse(r flow.Reverse) error
	DeleteReverse(addr netip.Addr, port uint16, proto flow.Protocol) error
	SetTable(vsID uint32, slots []uint32) (epoch uint32, err error)
	VServerCounters(id uint32) (flow.Counters, error)
	BackendCounters(id uint32) (flow.Counters, error)
}

type reverseKey struct {
	addr  netip.Addr
	port  uint16
	proto flow.Protocol
}

type programmed struct {
	vs     flow.VServer
	digest string // the cluster table programmed, by Digest
	epoch  uint32 // the data plane's epoch of that table
}

// Programmer translates the cluster's configuration and Maglev tables into
// data-plane entries: it allocates the numeric ids the data plane uses
// (vservers from 0, backends from 1, by name), writes vservers, backends,
// reverse entries and tables, and removes what is no longer wanted, in an
// order that never leaves a table naming an unknown backend. It is safe for
// concurrent use.
type Programmer struct {
	ft        FlowTables
	tableSize uint32

	mu       sync.Mutex
	vsIDs    map[string]uint32
	beIDs    map[string]uint32
	vservers map[string]programmed
	backends map[string]flow.Backend
	reverses map[reverseKey]flow.Reverse
}

// NewProgrammer programs ft, whose tables have tableSize slots (the
// cluster's Maglev M must be the same).
func NewProgrammer(ft FlowTables, tableSize uint32) *Programmer {
	return &Programmer{
		ft:        ft,
		tableSize: tableSize,
		vsIDs:     map[string]uint32{},
		beIDs:     map[string]uint32{},
		vservers:  map[string]programmed{},
		backends:  map[string]flow.Backend{},
		reverses:  map[reverseKey]flow.Reverse{},
	}
}

func lowestFree(used map[string]uint32, from uint32) uint32 {
	taken := make(map[uint32]bool, len(used))
	for _, id := range used {
		taken[id] = true
	}
	for id := from; ; id++ {
		if !taken[id] {
			return id
		}
	}
}

func (p *Programmer) vsID(name string) uint32 {
	if id, ok := p.vsIDs[name]; ok {
		return id
	}
	id := lowestFree(p.vsIDs, 0)
	p.vsIDs[name] = id
	return id
}

func (p *Programmer) beID(name string) uint32 {
	if id, ok := p.beIDs[name]; ok {
		return id
	}
	id := lowestFree(p.beIDs, 1)
	p.beIDs[name] = id
	return id
}

// Protocol maps a service or vserver type to what the data plane matches.
func Protocol(t cluster.ServiceType) flow.Protocol {
	switch t {
	case cluster.TypeUDP:
		return flow.ProtoUDP
	case cluster.TypeANY:
		return flow.ProtoAny
	}
	return flow.ProtoTCP // TCP, FTP, SSL_BRIDGE, HTTP, SSL
}

// Sync makes the data plane hold exactly cfg's vservers that have a table
// in tables, their backends, reverse entries and tables. A vserver whose
// table did not change keeps its data-plane table (and epoch).
func (p *Programmer) Sync(cfg cluster.Config, tables []cluster.VServerTable) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	tbl := make(map[string]cluster.VServerTable, len(tables))
	for _, t := range tables {
		tbl[t.VServer] = t
	}

	// 1. Backends every table names.
	wantBE := map[string]flow.Backend{}
	for _, t := range tables {
		for _, name := range t.Backends {
			svc, ok := cfg.Service(name)
			if !ok {
				return fmt.Errorf("table of vserver %s names service %q the configuration lacks", t.VServer, name)
			}
			wantBE[name] = flow.Backend{ID: p.beID(name), Addr: svc.IP, Port: svc.Port}
		}
	}
	for name, b := range wantBE {
		if cur, ok := p.backends[name]; ok && cur == b {
			continue
		}
		if err := p.ft.SetBackend(b); err != nil {
			return fmt.Errorf("programming backend %s: %w", name, err)
		}
		p.backends[name] = b
	}

	// 2. Vservers and their tables.
	wantVS := map[string]bool{}
	for _, v := range cfg.VServers {
		t, ok := tbl[v.Name]
		if !ok {
			continue
		}
		wantVS[v.Name] = true
		fv := flow.VServer{
			ID: p.vsID(v.Name), VIP: v.VIP, Port: v.Port, Protocol: Protocol(v.Type),
			Method: flow.MethodSourceIP, Seed: t.Seed,
			Stateless: v.ConnFailover == cluster.FailoverStateless,
		}
		if t.WithPort {
			fv.Method = flow.MethodSourceIPSourcePort
		}
		var list []uint32
		if !fv.Stateless {
			// Owned: the owner pair's active member picks the backend on
			// the first packet and keeps the flow; STATEFUL also mirrors.
			fv.Owned = true
			fv.Mirror = v.ConnFailover == cluster.FailoverStateful
			fv.SNAT = !p.usip(cfg, v.Name)
			// FTP: the data plane's ALG opens the data connections
			fv.FTP = v.Type == cluster.TypeFTP
			if v.Persistence != cluster.PersistSourceIP {
				switch v.LBMethod {
				case cluster.MethodRoundRobin:
					fv.Method = flow.MethodRoundRobin
				case cluster.MethodLeastConnection:
					fv.Method = flow.MethodLeastConnection
				}
			}
			if fv.Method == flow.MethodRoundRobin || fv.Method == flow.MethodLeastConnection {
				for i, name := range t.Backends {
					if i < len(t.Weights) && t.Weights[i] > 0 && len(list) < flow.MaxListBackends {
						list = append(list, p.backends[name].ID)
					}
				}
			}
		}
		if v.FwdMode == cluster.FwdDSR {
			fv.Mode = flow.ModeDSR
		}
		cur, had := p.vservers[v.Name]
		if !had || cur.vs != fv {
			if err := p.ft.SetVServer(fv); err != nil {
				return fmt.Errorf("programming vserver %s: %w", v.Name, err)
			}
			cur.vs = fv
			p.vservers[v.Name] = cur
		}
		if ls, ok := p.ft.(listSetter); ok && fv.Owned {
			if err := ls.SetVServerBackends(fv.ID, list); err != nil {
				return fmt.Errorf("programming the backends of vserver %s: %w", v.Name, err)
			}
		}
		if d := t.Digest(); !had || cur.digest != d {
			slots, err := p.slots(t)
			if err != nil {
				return err
			}
			epoch, err := p.ft.SetTable(fv.ID, slots)
			if err != nil {
				return fmt.Errorf("programming the table of vserver %s: %w", v.Name, err)
			}
			cur.digest, cur.epoch = d, epoch
			p.vservers[v.Name] = cur
		}
	}

	// 3. Reverse entries of the bound services: of stateless vservers (the
	// VIP to rewrite to), then of owned ones (replies need the owner's flow
	// state; a service of a stateless vserver is bound to it alone).
	wantRev := map[reverseKey]flow.Reverse{}
	for name := range wantVS {
		v, _ := cfg.VServer(name)
		if v.ConnFailover == cluster.FailoverStateless {
			continue
		}
		for _, b := range cfg.BindingsOf(name) {
			be, ok := wantBE[b.Service]
			if !ok {
				continue
			}
			svc, _ := cfg.Service(b.Service)
			r := flow.Reverse{Addr: svc.IP.Unmap(), Port: svc.Port, Protocol: Protocol(svc.Type), VServerID: p.vsIDs[name], BackendID: be.ID, Stateful: true}
			k := reverseKey{r.Addr, r.Port, r.Protocol}
			if cur, ok := wantRev[k]; !ok || r.VServerID < cur.VServerID {
				wantRev[k] = r // any of its vservers: the entry only marks it stateful
			}
		}
	}
	for name := range wantVS {
		v, _ := cfg.VServer(name)
		if v.ConnFailover != cluster.FailoverStateless {
			continue
		}
		for _, b := range cfg.BindingsOf(name) {
			be, ok := wantBE[b.Service]
			if !ok {
				continue
			}
			svc, _ := cfg.Service(b.Service)
			r := flow.Reverse{Addr: svc.IP.Unmap(), Port: svc.Port, Protocol: Protocol(svc.Type), VServerID: p.vsIDs[name], BackendID: be.ID}
			wantRev[reverseKey{r.Addr, r.Port, r.Protocol}] = r
		}
	}
	for k := range p.reverses {
		if _, ok := wantRev[k]; !ok {
			if err := p.ft.DeleteReverse(k.addr, k.port, k.proto); err != nil && !errors.Is(err, flow.ErrInvalidArgument) {
				return fmt.Errorf("removing reverse entry %v: %w", k.addr, err)
			}
			delete(p.reverses, k)
		}
	}
	for k, r := range wantRev {
		if cur, ok := p.reverses[k]; ok && cur == r {
			continue
		}
		if err := p.ft.SetReverse(r); err != nil {
			return fmt.Errorf("programming reverse entry of %v: %w", k.addr, err)
		}
		p.reverses[k] = r
	}

	// 4. Vservers, then backends, no longer wanted.
	for name, cur := range p.vservers {
		if wantVS[name] {
			continue
		}
		if err := p.ft.DeleteVServer(cur.vs.ID); err != nil && !errors.Is(err, flow.ErrUnknownVServer) {
			return fmt.Errorf("removing vserver %s: %w", name, err)
		}
		for k, r := range p.reverses { // the data plane dropped them with the vserver
			if r.VServerID == cur.vs.ID {
				delete(p.reverses, k)
			}
		}
		delete(p.vservers, name)
		delete(p.vsIDs, name)
	}
	for name, b := range p.backends {
		if _, ok := wantBE[name]; ok {
			continue
		}
		if err := p.ft.DeleteBackend(b.ID); err != nil && !errors.Is(err, flow.ErrUnknownBackend) {
			return fmt.Errorf("removing backend %s: %w", name, err)
		}
		delete(p.backends, name)
		delete(p.beIDs, name)
	}
	for name := range p.beIDs { // allocated but never programmed
		if _, ok := p.backends[name]; !ok {
			delete(p.beIDs, name)
		}
	}
	for name := range p.vsIDs {
		if _, ok := p.vservers[name]; !ok {
			delete(p.vsIDs, name)
		}
	}
	return nil
}

// listSetter is the data plane's backend lists of ROUNDROBIN and
// LEASTCONNECTION vservers; *flow.Datapath implements it.
type listSetter interface {
	SetVServerBackends(vsID uint32, ids []uint32) error
}

// usip reports whether every service bound to a vserver keeps the client's
// address; a vserver with any USIP OFF service is source-NATed.
func (p *Programmer) usip(cfg cluster.Config, vserver string) bool {
	for _, b := range cfg.BindingsOf(vserver) {
		if svc, ok := cfg.Service(b.Service); ok && !svc.USIP {
			return false
		}
	}
	return true
}

// MirrorIDs maps the programmed vservers' data-plane ids to the ids the
// mirror carries (the vserver's seed, hashing.VServerSeed of its name, the
// same on every node, where data-plane ids are allocated per node) and
// back; mirrored lists the mirror ids of STATEFUL vservers.
func (p *Programmer) MirrorIDs() (toMirror, toDataPlane map[uint32]uint32, mirrored map[uint32]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	toMirror = make(map[uint32]uint32, len(p.vservers))
	toDataPlane = make(map[uint32]uint32, len(p.vservers))
	mirrored = make(map[uint32]bool)
	for _, v := range p.vservers {
		toMirror[v.vs.ID] = v.vs.Seed
		toDataPlane[v.vs.Seed] = v.vs.ID
		if v.vs.Mirror {
			mirrored[v.vs.Seed] = true
		}
	}
	return toMirror, toDataPlane, mirrored
}

// slots turns a cluster table (indexes into its Backends) into backend ids.
func (p *Programmer) slots(t cluster.VServerTable) ([]uint32, error) {
	out := make([]uint32, p.tableSize)
	if len(t.Slots) == 0 {
		return out, nil // no backend UP: new flows are dropped
	}
	if uint32(len(t.Slots)) != p.tableSize {
		return nil, fmt.Errorf("table of vserver %s has %d slots, the data plane %d: cluster and data plane must use the same M", t.VServer, len(t.Slots), p.tableSize)
	}
	for i, s := range t.Slots {
		if int(s) >= len(t.Backends) {
			return nil, fmt.Errorf("table of vserver %s: slot %d names backend index %d of %d", t.VServer, i, s, len(t.Backends))
		}
		out[i] = p.backends[t.Backends[s]].ID
	}
	return out, nil
}

// Epochs returns the data-plane epoch of each programmed vserver's table.
func (p *Programmer) Epochs() map[string]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]uint64, len(p.vservers))
	for name, v := range p.vservers {
		out[name] = uint64(v.epoch)
	}
	return out
}

// IDs returns the vserver and backend ids in use, by name.
func (p *Programmer) IDs() (vservers, backends map[string]uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	vservers = make(map[string]uint32, len(p.vservers))
	for name, v := range p.vservers {
		vservers[name] = v.vs.ID
	}
	backends = make(map[string]uint32, len(p.backends))
	for name, b := range p.backends {
		backends[name] = b.ID
	}
	return vservers, backends
}

// Names returns, by data-plane id, the programmed vservers' names and the
// backends (service name and entry).
func (p *Programmer) Names() (vservers map[uint32]string, backends map[uint32]NamedBackend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	vservers = make(map[uint32]string, len(p.vservers))
	for name, v := range p.vservers {
		vservers[v.vs.ID] = name
	}
	backends = make(map[uint32]NamedBackend, len(p.backends))
	for name, b := range p.backends {
		backends[b.ID] = NamedBackend{Service: name, Backend: b}
	}
	return vservers, backends
}

// NamedBackend is a data-plane backend with its service's name.
type NamedBackend struct {
	Service string
	flow.Backend
}
