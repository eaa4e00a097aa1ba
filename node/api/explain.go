package api

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/hashing"
)

// Explain answers which vserver a flow reaches, which backend the table
// gives it, and which pair owns it, computing exactly what the data plane
// computes: the vserver by (VIP, port or "*", protocol; ANY matches TCP and
// UDP, an exact port before "*"), the slot by hashing.PacketHash with the
// table's seed modulo the table length, and the owner pair by
// hashing.Owner over the pairs that have a live member.
func Explain(c *cluster.Config, tables []Table, st ClusterStatus, req ExplainRequest) (Explanation, error) {
	proto := strings.ToUpper(req.Proto)
	if proto != "TCP" && proto != "UDP" {
		return Explanation{}, &Error{Status: http.StatusBadRequest,
			Message: fmt.Sprintf("protocol %q: want TCP or UDP", req.Proto)}
	}
	if !req.Src.IsValid() || !req.Dst.IsValid() {
		return Explanation{}, &Error{Status: http.StatusBadRequest,
			Message: "source and destination must be ADDR:PORT (IPv6 as [ADDR]:PORT)"}
	}
	src := netip.AddrPortFrom(req.Src.Addr().Unmap(), req.Src.Port())
	dst := netip.AddrPortFrom(req.Dst.Addr().Unmap(), req.Dst.Port())
	v, ok := matchVServer(c, dst, proto)
	if !ok {
		return Explanation{}, &Error{Status: http.StatusNotFound,
			Message: fmt.Sprintf("no lb vserver listens on %s %s: the packet passes to the node's kernel", dst, proto),
			Fix:     "list vservers with: show lb vserver"}
	}
	ex := Explanation{Src: src, Dst: dst, Proto: proto, VServer: v.Name, LBMethod: v.LBMethod,
		Persistence: v.Persistence, ConnFailover: v.ConnFailover, Mode: "owner"}

	if PureMethod(v) {
		ex.Mode = "table"
		ex.Seed = hashing.VServerSeed(v.Name)
		ex.WithPort = v.LBMethod == cluster.MethodSrcIPSrcPortHash && v.Persistence != cluster.PersistSourceIP
		var t *Table
		for i := range tables {
			if tables[i].VServer == v.Name {
				t = &tables[i]
			}
		}
		if t == nil {
			ex.Notes = append(ex.Notes, "the data plane holds no table for this vserver yet: the packet is dropped")
		} else {
			ex.Epoch, ex.Seed, ex.WithPort, ex.TableLen = t.Epoch, t.Seed, t.WithPort, len(t.Slots)
		}
		ex.Hash = hashing.PacketHash(ex.Seed, src.Addr(), src.Port(), ex.WithPort)
		if t != nil && len(t.Slots) > 0 {
			ex.Slot = hashing.Slot(ex.Hash, uint64(len(t.Slots)))
			idx := t.Slots[ex.Slot]
			if int(idx) < len(t.Backends) {
				ex.Service = t.Backends[idx]
			} else {
				ex.Notes = append(ex.Notes, fmt.Sprintf("slot %d holds backend index %d beyond the table's %d backends", ex.Slot, idx, len(t.Backends)))
			}
		} else if t != nil {
			ex.Notes = append(ex.Notes, "the table is empty (no UP backend): the packet is dropped")
		}
		if ex.Service != "" {
			if sv, ok := c.Service(ex.Service); ok {
				port := sv.Port
				if port == 0 {
					port = dst.Port() // a "*" service keeps the client's destination port
				}
				ex.Backend = netip.AddrPortFrom(sv.IP, port)
			}
		}
		if v.ConnFailover == cluster.FailoverStateless {
			ex.Notes = append(ex.Notes, "stateless failover: any node rebuilds this flow from the packet alone")
		}
	} else {
		ex.Notes = append(ex.Notes, fmt.Sprintf("%s is not a function of the packet: the owner pair's active node picks the backend on the first packet", v.LBMethod))
	}

	if ex.Mode == "owner" || v.ConnFailover == cluster.FailoverStateful {
		live := livePairs(st)
		ids := make([]uint32, 0, len(live))
		for id := range live {
			ids = append(ids, id)
		}
		key := hashing.OwnerKey{Addr: src.Addr(), Port: src.Port()}
		if v.Type == cluster.TypeFTP {
			// the data plane owns FTP flows by the client's address alone,
			// so that data connections meet their control connection
			key.Port = 0
			ex.Notes = append(ex.Notes, "FTP: the owner is chosen by the client's address alone, for the control and data connections alike")
		}
		owner, err := hashing.Owner(key, ids)
		if err != nil {
			ex.Notes = append(ex.Notes, "no pair has a live member: nobody owns this flow")
		} else {
			p := live[owner]
			ex.OwnerPair, ex.OwnerNode = owner, p.Active
			ex.Mirrored = v.ConnFailover == cluster.FailoverStateful && p.Protected
			if v.ConnFailover == cluster.FailoverStateful && !p.Protected {
				ex.Notes = append(ex.Notes, fmt.Sprintf("pair %d has no live partner: the flow is not mirrored", owner))
			}
		}
	}
	return ex, nil
}

// PureMethod reports whether a vserver's backend choice is a pure function
// of the packet (a source-IP or source-IP+port Maglev table), so that any
// node rebuilds it without state.
func PureMethod(v *cluster.VServer) bool {
	return v.Persistence == cluster.PersistSourceIP ||
		v.LBMethod == cluster.MethodSourceIPHash || v.LBMethod == cluster.MethodSrcIPSrcPortHash
}

// ProtoMatches reports whether a vserver of type t receives proto (TCP or
// UDP): ANY takes both, UDP takes UDP, every other type is carried by TCP.
func ProtoMatches(t cluster.ServiceType, proto string) bool {
	switch t {
	case cluster.TypeANY:
		return true
	case cluster.TypeUDP:
		return proto == "UDP"
	}
	return proto == "TCP"
}

func matchVServer(c *cluster.Config, dst netip.AddrPort, proto string) (*cluster.VServer, bool) {
	var wild *cluster.VServer
	for i := range c.VServers {
		v := &c.VServers[i]
		if v.VIP.Unmap() != dst.Addr() || !ProtoMatches(v.Type, proto) {
			continue
		}
		if v.Port == dst.Port() {
			return v, true
		}
		if v.Port == 0 && wild == nil {
			wild = v
		}
	}
	return wild, wild != nil
}

// livePairs returns the pairs with at least one alive member, by id.
func livePairs(st ClusterStatus) map[uint32]Pair {
	alive := make(map[string]bool, len(st.Members))
	for _, m := range st.Members {
		alive[m.ID] = m.State == MemberAlive
	}
	out := make(map[uint32]Pair)
	for _, p := range st.Pairs {
		for _, m := range p.Members {
			if alive[m] {
				out[p.ID] = p
				break
			}
		}
	}
	return out
}
