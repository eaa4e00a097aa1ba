package nstest

import (
	"net/netip"
	"testing"
)

const showRouteAll = `BIRD 2.0.12 ready.
Table master4:
203.0.113.10/32      unicast [tn4 03:50:01.123] * (100) [AS65001i]
	via 10.0.0.1 on tnvb12345abc
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 65001
	BGP.next_hop: 10.0.0.1
	BGP.local_pref: 100
	BGP.community: (65001,100) (65535,0)
                     unicast [tn4b 03:50:01.200] (100) [AS65003i]
	via 10.0.0.3 on tnvb12345abc
	Type: BGP univ
	BGP.next_hop: 10.0.0.3

Table master6:
2001:db8::10/128     unicast [tn6 03:50:01.321] * (100) [AS65001i]
	via fd00::1 on tnvb12345abc
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 65001
	BGP.next_hop: fd00::1 fe80::1
	BGP.local_pref: 100
`

func TestParseShowRouteAll(t *testing.T) {
	routes, err := ParseShowRouteAll(showRouteAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 {
		t.Fatalf("routes = %v", routes)
	}
	r4 := routes[netip.MustParsePrefix("203.0.113.10/32")]
	if r4.Protocol != "tn4" || r4.NextHop != "10.0.0.1" || !r4.HasCommunity(65535, 0) || !r4.HasCommunity(65001, 100) || len(r4.Communities) != 2 {
		t.Errorf("v4 route = %+v", r4)
	}
	r6 := routes[netip.MustParsePrefix("2001:db8::10/128")]
	if r6.Protocol != "tn6" || r6.HasCommunity(65535, 0) {
		t.Errorf("v6 route = %+v", r6)
	}
}

func FuzzParseShowRouteAll(f *testing.F) {
	f.Add(showRouteAll)
	f.Add("BIRD 2.0.12 ready.\nTable master4:\n10.0.0.0/8 unicast [x 1] * (100)\n\tBGP.community: (1,2)\n")
	f.Add("garbage\n")
	f.Fuzz(func(t *testing.T, s string) {
		routes, err := ParseShowRouteAll(s)
		if err != nil {
			return
		}
		for p, r := range routes {
			if p != r.Prefix || !p.IsValid() {
				t.Fatalf("route keyed %v holds %v", p, r.Prefix)
			}
		}
	})
}
