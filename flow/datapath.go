package flow

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

var (
	// ErrInvalidConfig wraps every Config.validate failure.
	ErrInvalidConfig = errors.New("invalid data-plane config")
	// ErrInvalidArgument: a vserver, backend, reverse entry or table the
	// data plane cannot hold (id out of range, bad address, wrong length).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnknownVServer: no vserver with that id was set.
	ErrUnknownVServer = errors.New("unknown vserver")
	// ErrUnknownBackend: a table or reverse entry names a backend not set.
	ErrUnknownBackend = errors.New("unknown backend")
	// ErrFlowNotFound: LookupFlow found no entry.
	ErrFlowNotFound = errors.New("flow not found")
	// ErrAttached: the program is already attached to that interface.
	ErrAttached = errors.New("already attached")
	// ErrNotAttached: Detach of an interface the program is not attached to.
	ErrNotAttached = errors.New("not attached")
	// ErrClosed: the Datapath was closed.
	ErrClosed = errors.New("datapath closed")
)

// XDPMode is how the program is attached to an interface.
type XDPMode int

const (
	// XDPNative runs the program in the driver (the default).
	XDPNative XDPMode = iota
	// XDPGeneric runs it after the kernel built an skb: slower, works on any
	// interface.
	XDPGeneric
)

// Config sizes the data plane. The zero value of every field means its
// default.
type Config struct {
	// TableSize is M, the slot count of every Maglev table (a prime, as
	// Maglev needs). Default 65537.
	TableSize uint32
	// MaxVServers bounds vserver ids: 0 <= id < MaxVServers. The tables
	// array holds MaxVServers*2*TableSize backend ids of 4 bytes (34 MB with
	// the defaults). Default 64.
	MaxVServers uint32
	// MaxBackends bounds backend ids: 1 <= id < MaxBackends. Default 4096.
	MaxBackends uint32
	// MaxServices bounds reverse entries, and the VIP and service addresses
	// the data plane knows. Default 4096.
	MaxServices uint32
	// FlowTableSize is the capacity of the LRU flow table. Default 262144.
	FlowTableSize uint32
	// XDPMode is how Attach attaches. Default XDPNative.
	XDPMode XDPMode
	// FIBCacheTTL is how long a route and neighbour lookup
	// (bpf_fib_lookup) is reused per CPU for a destination: a route or
	// neighbour change reaches cached destinations within it. Default 1s;
	// negative disables the cache (every packet does the lookup).
	FIBCacheTTL time.Duration
	// FIBCacheSize is the capacity of the per-CPU LRU of fib results.
	// Default 16384.
	FIBCacheSize uint32
	// SteerPort is the UDP port of Tandem's steering encapsulation on the
	// backplane (see stateful.go). Default 6635; every node of a cluster
	// must use the same.
	SteerPort uint16
	// HotCacheSize is the number of slots per CPU of the hot cache: a
	// direct-mapped cache of stateless flows that forwards their packets
	// with no hash lookup (see fast.go). A power of two; each slot takes
	// 104 bytes (416 KiB per CPU with the default: a bigger cache holds
	// more flows, but its slots are colder, and a probe of a cold slot
	// costs more than the hash lookup it saves). Default 4096; negative
	// disables the cache. The cache needs the FIB cache (FIBCacheTTL not
	// negative).
	HotCacheSize int
	// EventRingSize is the size in bytes of the ring buffer that reports
	// new and closed flows of mirrored vservers (a power of two, at least a
	// page). Default 4 MiB: about 50,000 events of 80 bytes.
	EventRingSize uint32
	// FTPExpectTTL is how long an expectation of the FTP ALG waits for its
	// data connection (clients connect within a round trip). Default 30s.
	FTPExpectTTL time.Duration
	// FTPExpectations bounds the expectations table (an LRU). Default 16384.
	FTPExpectations uint32
}

func (c Config) withDefaults() Config {
	if c.TableSize == 0 {
		c.TableSize = 65537
	}
	if c.MaxVServers == 0 {
		c.MaxVServers = 64
	}
	if c.MaxBackends == 0 {
		c.MaxBackends = 4096
	}
	if c.MaxServices == 0 {
		c.MaxServices = 4096
	}
	if c.FlowTableSize == 0 {
		c.FlowTableSize = 262144
	}
	if c.FIBCacheTTL == 0 {
		c.FIBCacheTTL = time.Second
	}
	if c.FIBCacheSize == 0 {
		c.FIBCacheSize = 16384
	}
	if c.SteerPort == 0 {
		c.SteerPort = DefaultSteerPort
	}
	if c.EventRingSize == 0 {
		c.EventRingSize = 4 << 20
	}
	if c.FTPExpectTTL == 0 {
		c.FTPExpectTTL = 30 * time.Second
	}
	if c.FTPExpectations == 0 {
		c.FTPExpectations = 16384
	}
	if c.HotCacheSize == 0 {
		c.HotCacheSize = 4096
	}
	return c
}

func (c Config) validate() error {
	if c.TableSize < 2 {
		return fmt.Errorf("%w: TableSize %d: a Maglev table needs at least 2 slots", ErrInvalidConfig, c.TableSize)
	}
	if n := uint64(c.MaxVServers) * 2 * uint64(c.TableSize); n > 1<<31 {
		return fmt.Errorf("%w: MaxVServers*2*TableSize = %d slots: the tables array is indexed by 32 bits and must stay under 2^31; lower MaxVServers or TableSize", ErrInvalidConfig, n)
	}
	if c.MaxBackends < 2 {
		return fmt.Errorf("%w: MaxBackends %d: id 0 means no backend, so at least 2", ErrInvalidConfig, c.MaxBackends)
	}
	if c.EventRingSize < 4096 || c.EventRingSize&(c.EventRingSize-1) != 0 {
		return fmt.Errorf("%w: EventRingSize %d: want a power of two of at least 4096 bytes", ErrInvalidConfig, c.EventRingSize)
	}
	if c.FTPExpectTTL < 0 {
		return fmt.Errorf("%w: FTPExpectTTL %v: want a positive duration", ErrInvalidConfig, c.FTPExpectTTL)
	}
	if c.HotCacheSize > 0 && (c.HotCacheSize&(c.HotCacheSize-1) != 0 || c.HotCacheSize > 1<<24) {
		return fmt.Errorf("%w: HotCacheSize %d: want a power of two up to 2^24 (or negative: no hot cache)", ErrInvalidConfig, c.HotCacheSize)
	}
	if c.XDPMode != XDPNative && c.XDPMode != XDPGeneric {
		return fmt.Errorf("%w: XDPMode %d: want XDPNative or XDPGeneric", ErrInvalidConfig, c.XDPMode)
	}
	return nil
}

// Datapath owns the XDP program, its maps and its links. Its methods are
// safe for concurrent use.
type Datapath struct {
	cfg Config

	mu       sync.Mutex
	objs     *lbObjects
	links    map[string]link.Link
	vservers map[uint32]VServer
	backends map[uint32]Backend
	reverses map[reverseID]Reverse
	// references to each address, to keep the addrs map's flags
	vipRefs     map[netip.Addr]int
	serviceRefs map[netip.Addr]int
	// the node's own addresses (SetLocalAddrs)
	locals map[netip.Addr]bool
	// stateful data path (stateful.go)
	members map[netip.Addr]bool // cluster members' backplane addresses
	snips   map[netip.Addr]bool // pairs' SNIPs
	selfCfg lbSelfCfg
	pairs   []Pair
	lists   map[uint32][]uint32 // backends of ROUNDROBIN/LEASTCONNECTION vservers
	// FTP ALG (ftp.go): references to FTP VIPs and FTP backends' addresses
	ftpRefs map[netip.Addr]int
	ftpRev  map[reverseID]bool // reverse entries that hold a reference in ftpRefs
	// the hit path's configuration generation and address filter (fast.go)
	fast fastState
	// InstallRecords' buffers (install.go)
	install installScratch
}

type reverseID struct {
	addr  netip.Addr
	port  uint16
	proto Protocol
}

// New loads the data plane into the kernel. It attaches to no interface.
func New(cfg Config) (_ *Datapath, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	spec, err := loadLb()
	if err != nil {
		return nil, fmt.Errorf("reading BPF object: %w", err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("counting CPUs: %w", err)
	}
	sizes := map[string]uint32{
		"vservers":      2 * cfg.MaxVServers,
		"addrs":         cfg.MaxServices + cfg.MaxVServers + MaxLocalAddrs,
		"backends":      2 * cfg.MaxBackends, // and their data backends (ftp.go)
		"reverse":       2 * cfg.MaxServices,
		"flows":         cfg.FlowTableSize,
		"tables":        cfg.MaxVServers * 2 * cfg.TableSize,
		"table_active":  cfg.MaxVServers,
		"vserver_stats": cfg.MaxVServers,
		"backend_stats": 2 * cfg.MaxBackends,
		"fib_cache":     cfg.FIBCacheSize,
		"backend_fib":   2 * cfg.MaxBackends,
		"rflows":        cfg.FlowTableSize,
		"vs_lists":      cfg.MaxVServers,
		"rr_next":       cfg.MaxVServers,
		"be_conns":      2 * cfg.MaxBackends,
		"events":        cfg.EventRingSize,
		"vs_byid":       cfg.MaxVServers,
		"expects":       cfg.FTPExpectations,
		"ftp_vips":      cfg.MaxServices,
	}
	hotSlots, err := hotSlots(cfg)
	if err != nil {
		return nil, err
	}
	sizes["hot"] = max(hotSlots*uint32(ncpu), 1)
	for name, n := range sizes {
		m, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("BPF object has no map %q", name)
		}
		m.MaxEntries = n
	}
	if err := spec.Variables["table_size"].Set(cfg.TableSize); err != nil {
		return nil, fmt.Errorf("setting table size: %w", err)
	}
	ttl := uint64(max(cfg.FIBCacheTTL, 0))
	if err := spec.Variables["fib_cache_ns"].Set(ttl); err != nil {
		return nil, fmt.Errorf("setting fib cache TTL: %w", err)
	}
	if err := spec.Variables["hot_slots"].Set(hotSlots); err != nil {
		return nil, fmt.Errorf("setting hot cache size: %w", err)
	}
	if err := spec.Variables["steer_port"].Set(htons(cfg.SteerPort)); err != nil {
		return nil, fmt.Errorf("setting steering port: %w", err)
	}
	if err := spec.Variables["ftp_expect_ns"].Set(uint64(cfg.FTPExpectTTL)); err != nil {
		return nil, fmt.Errorf("setting FTP expectation TTL: %w", err)
	}
	if err := spec.Variables["data_backend_base"].Set(cfg.MaxBackends); err != nil {
		return nil, fmt.Errorf("setting data backend ids: %w", err)
	}
	if err := checkFastSpec(spec); err != nil {
		return nil, err
	}
	objs := new(lbObjects)
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading BPF objects: %+v", verr)
		}
		return nil, fmt.Errorf("loading BPF objects: %w", err)
	}
	d := &Datapath{
		cfg:         cfg,
		objs:        objs,
		links:       make(map[string]link.Link),
		vservers:    make(map[uint32]VServer),
		backends:    make(map[uint32]Backend),
		reverses:    make(map[reverseID]Reverse),
		vipRefs:     make(map[netip.Addr]int),
		serviceRefs: make(map[netip.Addr]int),
		locals:      make(map[netip.Addr]bool),
		members:     make(map[netip.Addr]bool),
		snips:       make(map[netip.Addr]bool),
		lists:       make(map[uint32][]uint32),
		ftpRefs:     make(map[netip.Addr]int),
		ftpRev:      make(map[reverseID]bool),
		fast:        newFastState(),
	}
	if err := d.bumpGen(); err != nil {
		objs.Close()
		return nil, err
	}
	d.startGenTicker()
	return d, nil
}

// Config returns the configuration in effect, defaults filled in.
func (d *Datapath) Config() Config { return d.cfg }

// Program is the XDP program, for tests and BPF_PROG_TEST_RUN users.
func (d *Datapath) Program() *ebpf.Program { return d.objs.XdpLb }

// PassProgram is a program that passes everything: attached to a veth peer it
// gives the peer the NAPI context that XDP_REDIRECT into the veth needs, and
// benchmarks use it as their baseline.
func (d *Datapath) PassProgram() *ebpf.Program { return d.objs.XdpPass }

// Attach attaches the program to the named interfaces in the configured
// mode. It attaches to all of them or, on error, to none: the ones this call
// attached are detached again.
func (d *Datapath) Attach(ifnames ...string) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	var done []string
	closeOnError := func() {
		if err == nil {
			return
		}
		for _, name := range done {
			if l, ok := d.links[name]; ok {
				l.Close()
				delete(d.links, name)
			}
		}
	}
	defer closeOnError()
	flags := link.XDPDriverMode
	if d.cfg.XDPMode == XDPGeneric {
		flags = link.XDPGenericMode
	}
	for _, ifname := range ifnames {
		if _, ok := d.links[ifname]; ok {
			return fmt.Errorf("attaching to %s: %w", ifname, ErrAttached)
		}
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("attaching to %s: %w", ifname, err)
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.XdpLb, Interface: ifi.Index, Flags: flags})
		if err != nil {
			return fmt.Errorf("attaching to %s: %w", ifname, err)
		}
		d.links[ifname] = l
		done = append(done, ifname)
	}
	return nil
}

// Detach removes the program from the named interface.
func (d *Datapath) Detach(ifname string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.links[ifname]
	if !ok {
		return fmt.Errorf("detaching from %s: %w", ifname, ErrNotAttached)
	}
	delete(d.links, ifname)
	if err := l.Close(); err != nil {
		return fmt.Errorf("detaching from %s: %w", ifname, err)
	}
	return nil
}

// Attached lists the interfaces the program is attached to.
func (d *Datapath) Attached() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.links))
	for n := range d.links {
		names = append(names, n)
	}
	return names
}

// Close detaches from every interface and releases every map and program.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil
	}
	d.stopGenTicker()
	var errs []error
	for name, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching from %s: %w", name, err))
		}
		delete(d.links, name)
	}
	if err := d.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing BPF objects: %w", err))
	}
	d.objs = nil
	return errors.Join(errs...)
}

func (d *Datapath) vsKeys(v VServer) []lbVsKey {
	addr, fam := addrWords(v.VIP)
	var keys []lbVsKey
	for _, p := range v.Protocol.expand() {
		keys = append(keys, lbVsKey{Addr: addr, Port: htons(v.Port), Proto: uint8(p), Family: fam})
	}
	return keys
}

// SetVServer adds a vserver or changes one (same id). Changing a vserver's
// VIP, port or protocol moves its entries; its tables stay.
func (d *Datapath) SetVServer(v VServer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	if v.ID >= d.cfg.MaxVServers {
		return fmt.Errorf("%w: vserver id %d: want < MaxVServers (%d)", ErrInvalidArgument, v.ID, d.cfg.MaxVServers)
	}
	if !v.VIP.IsValid() {
		return fmt.Errorf("%w: vserver %d has no VIP", ErrInvalidArgument, v.ID)
	}
	v.VIP = v.VIP.Unmap()
	if v.Protocol != ProtoAny && v.Protocol != ProtoTCP && v.Protocol != ProtoUDP {
		return fmt.Errorf("%w: vserver %d: protocol %s: want TCP, UDP or ANY", ErrInvalidArgument, v.ID, v.Protocol)
	}
	switch v.Method {
	case MethodSourceIP, MethodSourceIPSourcePort:
	case MethodRoundRobin, MethodLeastConnection:
		if !v.Owned || v.Stateless {
			return fmt.Errorf("%w: vserver %d: ROUNDROBIN and LEASTCONNECTION are not a function of the packet: the vserver must be Owned, not Stateless", ErrInvalidArgument, v.ID)
		}
	default:
		return fmt.Errorf("%w: vserver %d: method %d: want MethodSourceIP, MethodSourceIPSourcePort, MethodRoundRobin or MethodLeastConnection", ErrInvalidArgument, v.ID, v.Method)
	}
	if v.Stateless && (v.Owned || v.Mirror || v.SNAT) {
		return fmt.Errorf("%w: vserver %d: a Stateless vserver is neither Owned, mirrored nor source-NATed", ErrInvalidArgument, v.ID)
	}
	if v.Untracked && !v.Stateless {
		return fmt.Errorf("%w: vserver %d: only a Stateless vserver can be Untracked (an owned flow lives in the flow table)", ErrInvalidArgument, v.ID)
	}
	if (v.Mirror || v.SNAT) && !v.Owned {
		return fmt.Errorf("%w: vserver %d: Mirror and SNAT need an Owned vserver", ErrInvalidArgument, v.ID)
	}
	if v.FTP && (!v.Owned || v.Protocol != ProtoTCP) {
		return fmt.Errorf("%w: vserver %d: FTP needs an Owned TCP vserver (its ALG follows the owner's flow state)", ErrInvalidArgument, v.ID)
	}
	if v.Mode != ModeNAT && v.Mode != ModeDSR {
		return fmt.Errorf("%w: vserver %d: mode %d: want ModeNAT or ModeDSR", ErrInvalidArgument, v.ID, v.Mode)
	}
	val := lbVserver{Id: v.ID, Seed: v.Seed, Method: uint8(v.Method), Mode: uint8(v.Mode)}
	if v.Stateless {
		val.Flags |= vsFlagStateless
	}
	if v.Owned {
		val.Flags |= vsFlagOwned
	}
	if v.Mirror {
		val.Flags |= vsFlagMirror
	}
	if v.SNAT {
		val.Flags |= vsFlagSNAT
	}
	if v.FTP {
		val.Flags |= vsFlagFTP
	}
	if v.Untracked {
		val.Flags |= vsFlagUntracked
	}
	if err := d.objs.VsByid.Update(&v.ID, &val, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing vserver %d: %w", v.ID, err)
	}
	newKeys := d.vsKeys(v)
	for _, k := range newKeys {
		if err := d.objs.Vservers.Update(&k, &val, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("writing vserver %d: %w", v.ID, err)
		}
	}
	if old, ok := d.vservers[v.ID]; ok {
		keep := make(map[lbVsKey]bool, len(newKeys))
		for _, k := range newKeys {
			keep[k] = true
		}
		for _, k := range d.vsKeys(old) {
			if !keep[k] {
				if err := d.objs.Vservers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("removing old entry of vserver %d: %w", v.ID, err)
				}
			}
		}
		if err := d.unref(d.vipRefs, old.VIP); err != nil {
			return err
		}
		if old.FTP {
			if err := d.unref(d.ftpRefs, old.VIP); err != nil {
				return err
			}
		}
	}
	d.vservers[v.ID] = v
	if v.FTP {
		if err := d.ref(d.ftpRefs, v.VIP); err != nil {
			return err
		}
	}
	for rid, r := range d.reverses {
		if d.ftpRev[rid] && r.VServerID == v.ID {
			if err := d.writeFTPVIPs(rid.addr); err != nil {
				return err
			}
		}
	}
	if err := d.bumpGen(); err != nil {
		return err
	}
	return d.ref(d.vipRefs, v.VIP)
}

// DeleteVServer removes a vserver, the reverse entries that point to it, and
// empties both halves of its table, so a later vserver with the same id
// starts with no backend.
func (d *Datapath) DeleteVServer(id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	v, ok := d.vservers[id]
	if !ok {
		return fmt.Errorf("deleting vserver %d: %w", id, ErrUnknownVServer)
	}
	for _, k := range d.vsKeys(v) {
		if err := d.objs.Vservers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting vserver %d: %w", id, err)
		}
	}
	for rid, r := range d.reverses {
		if r.VServerID == id {
			if err := d.deleteReverse(rid); err != nil {
				return err
			}
		}
	}
	delete(d.vservers, id)
	if err := d.bumpGen(); err != nil {
		return err
	}
	if err := d.unref(d.vipRefs, v.VIP); err != nil {
		return err
	}
	if v.FTP {
		if err := d.unref(d.ftpRefs, v.VIP); err != nil {
			return err
		}
	}
	var none lbVserver
	if err := d.objs.VsByid.Update(&id, &none, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("deleting vserver %d: %w", id, err)
	}
	zero := uint32(0)
	if err := d.objs.TableActive.Update(&id, &zero, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("resetting table of vserver %d: %w", id, err)
	}
	empty := make([]uint32, d.cfg.TableSize)
	for half := uint32(0); half < 2; half++ {
		if err := d.writeHalf(id, half, empty); err != nil {
			return err
		}
	}
	return nil
}

// SetBackend adds or changes a backend. Changing the address of a backend
// that tables still name redirects their flows at once; prefer a new id.
func (d *Datapath) SetBackend(b Backend) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	if b.ID == 0 || b.ID >= d.cfg.MaxBackends {
		return fmt.Errorf("%w: backend id %d: want 1..%d", ErrInvalidArgument, b.ID, d.cfg.MaxBackends-1)
	}
	if !b.Addr.IsValid() {
		return fmt.Errorf("%w: backend %d has no address", ErrInvalidArgument, b.ID)
	}
	b.Addr = b.Addr.Unmap()
	addr, fam := addrWords(b.Addr)
	val := lbBackend{Addr: addr, Port: htons(b.Port), Family: fam, Flags: beFlagValid}
	if err := d.objs.Backends.Update(&b.ID, &val, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing backend %d: %w", b.ID, err)
	}
	d.backends[b.ID] = b
	if _, ok := d.backends[d.DataBackendID(b.ID)]; ok {
		if err := d.setDataBackend(b); err != nil {
			return err
		}
	}
	return d.bumpGen()
}

// DeleteBackend marks a backend invalid: flows to it re-pick from the table
// (and are dropped, ReasonDropNoBackend, while a table still names it).
func (d *Datapath) DeleteBackend(id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	if _, ok := d.backends[id]; !ok {
		return fmt.Errorf("deleting backend %d: %w", id, ErrUnknownBackend)
	}
	var zero lbBackend
	if err := d.objs.Backends.Update(&id, &zero, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("deleting backend %d: %w", id, err)
	}
	delete(d.backends, id)
	if err := d.deleteDataBackend(id); err != nil {
		return err
	}
	return d.bumpGen()
}

// SetReverse adds or changes the reverse entry of a bound service.
func (d *Datapath) SetReverse(r Reverse) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	v, ok := d.vservers[r.VServerID]
	if !ok {
		return fmt.Errorf("reverse entry for %s: vserver %d: %w", r.Addr, r.VServerID, ErrUnknownVServer)
	}
	if !r.Addr.IsValid() {
		return fmt.Errorf("%w: reverse entry without an address", ErrInvalidArgument)
	}
	r.Addr = r.Addr.Unmap()
	if r.Addr.Is4() != v.VIP.Is4() {
		return fmt.Errorf("%w: service %s and VIP %s are of different IP versions: NAT between them is not supported", ErrInvalidArgument, r.Addr, v.VIP)
	}
	if _, ok := d.backends[r.BackendID]; !ok {
		return fmt.Errorf("reverse entry for %s: backend %d: %w", r.Addr, r.BackendID, ErrUnknownBackend)
	}
	rid := reverseID{r.Addr, r.Port, r.Protocol}
	if _, ok := d.reverses[rid]; ok {
		if err := d.deleteReverse(rid); err != nil {
			return err
		}
	}
	addr, fam := addrWords(r.Addr)
	vip, _ := addrWords(v.VIP)
	val := lbRev{Vip: vip, Vport: htons(v.Port), Family: fam, VsId: v.ID, BackendId: r.BackendID}
	if r.Stateful {
		val.Flags |= revFlagStateful
	}
	if v.FTP {
		val.Flags |= revFlagFTP
		if err := d.setDataBackend(d.backends[r.BackendID]); err != nil {
			return err
		}
	}
	for _, p := range r.Protocol.expand() {
		k := lbRevKey{Addr: addr, Port: htons(r.Port), Proto: uint8(p), Family: fam}
		if err := d.objs.Reverse.Update(&k, &val, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("writing reverse entry for %s: %w", r.Addr, err)
		}
	}
	d.reverses[rid] = r
	if v.FTP {
		d.ftpRev[rid] = true
		if err := d.ref(d.ftpRefs, r.Addr); err != nil {
			return err
		}
		if err := d.writeFTPVIPs(r.Addr); err != nil {
			return err
		}
	}
	if err := d.ref(d.serviceRefs, r.Addr); err != nil {
		return err
	}
	// replies in the hot cache were rewritten from the old entry
	return d.bumpGen()
}

// DeleteReverse removes the reverse entry of a service.
func (d *Datapath) DeleteReverse(addr netip.Addr, port uint16, proto Protocol) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	rid := reverseID{addr.Unmap(), port, proto}
	if _, ok := d.reverses[rid]; !ok {
		return fmt.Errorf("deleting reverse entry %s:%d/%s: %w", addr, port, proto, ErrInvalidArgument)
	}
	return d.deleteReverse(rid)
}

func (d *Datapath) deleteReverse(rid reverseID) error {
	addr, fam := addrWords(rid.addr)
	for _, p := range rid.proto.expand() {
		k := lbRevKey{Addr: addr, Port: htons(rid.port), Proto: uint8(p), Family: fam}
		if err := d.objs.Reverse.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting reverse entry for %s: %w", rid.addr, err)
		}
	}
	delete(d.reverses, rid)
	if d.ftpRev[rid] {
		delete(d.ftpRev, rid)
		if err := d.unref(d.ftpRefs, rid.addr); err != nil {
			return err
		}
		if err := d.writeFTPVIPs(rid.addr); err != nil {
			return err
		}
	}
	if err := d.unref(d.serviceRefs, rid.addr); err != nil {
		return err
	}
	return d.bumpGen()
}

// writeChanged rewrites the addrs entries of the addresses in one of two
// sets and not the other: a set (locals, members, SNIPs) went from old to
// want, and each changed address's flags are computed again.
func (d *Datapath) writeChanged(old, want map[netip.Addr]bool) error {
	for a := range old {
		if !want[a] {
			if err := d.writeAddr(a); err != nil {
				return err
			}
		}
	}
	for a := range want {
		if !old[a] {
			if err := d.writeAddr(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *Datapath) ref(refs map[netip.Addr]int, a netip.Addr) error {
	refs[a]++
	return d.writeAddr(a)
}

func (d *Datapath) unref(refs map[netip.Addr]int, a netip.Addr) error {
	if refs[a]--; refs[a] <= 0 {
		delete(refs, a)
	}
	return d.writeAddr(a)
}

// writeAddr writes the flags of an address from its reference counts.
func (d *Datapath) writeAddr(a netip.Addr) (err error) {
	words, fam := addrWords(a)
	k := lbAddrKey{Addr: words, Family: fam}
	var flags uint32
	if d.vipRefs[a] > 0 {
		flags |= addrFlagVIP
	}
	if d.serviceRefs[a] > 0 {
		flags |= addrFlagBackend
	}
	if d.locals[a] {
		flags |= addrFlagLocal
	}
	if d.members[a] {
		flags |= addrFlagMember
	}
	if d.snips[a] {
		flags |= addrFlagSNIP
	}
	if d.ftpRefs[a] > 0 {
		flags |= addrFlagFTP
	}
	// The filter bit first when an address becomes ours, last when it
	// stops being ours: the filter never hides an entry of addrs.
	ours := flags&(addrFlagVIP|addrFlagBackend|addrFlagFTP) != 0
	if ours {
		if err := d.filterAddr(a, true); err != nil {
			return err
		}
	} else {
		defer func() {
			if err == nil {
				err = d.filterAddr(a, false)
			}
		}()
	}
	if flags == 0 {
		if err := d.objs.Addrs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("forgetting address %s: %w", a, err)
		}
		return nil
	}
	if err := d.objs.Addrs.Update(&k, &flags, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing address %s: %w", a, err)
	}
	return nil
}

// MaxLocalAddrs bounds how many of the node's own addresses SetLocalAddrs
// takes; the addrs map is sized with room for them.
const MaxLocalAddrs = 256

// SetLocalAddrs replaces the set of the node's own addresses (those of its
// interfaces, not the VIPs). A packet from a bound service to one of them is
// a reply to the node itself — a health probe, an operator's connection — and
// passes to the kernel untouched instead of being rewritten back to a VIP
// (ReasonPassLocal).
func (d *Datapath) SetLocalAddrs(addrs []netip.Addr) error {
	if len(addrs) > MaxLocalAddrs {
		return fmt.Errorf("%w: %d local addresses, at most %d", ErrInvalidConfig, len(addrs), MaxLocalAddrs)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return ErrClosed
	}
	want := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		want[a.Unmap()] = true
	}
	old := d.locals
	d.locals = want
	if err := d.writeChanged(old, want); err != nil {
		return err
	}
	// a reply in the hot cache may be to an address now local
	return d.bumpGen()
}
