package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/hashing"
	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/api/apitest"
)

type fixture struct {
	store  *cluster.Store
	status *apitest.Status
	client *api.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	store := apitest.NewStore(t)
	status := apitest.NewStatus(store)
	sock := apitest.Serve(t, apitest.NewHandler(t, store, status))
	c, err := api.NewClient(api.ClientConfig{Node: sock, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &fixture{store: store, status: status, client: c}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func statelessSetup(t *testing.T, f *fixture) {
	t.Helper()
	c := ctx(t)
	for i, ip := range []string{"10.0.2.11", "10.0.2.12", "10.0.2.13"} {
		name := []string{"web1", "web2", "web3"}[i]
		if _, err := f.client.AddService(c, cluster.Service{Name: name, IP: mustAddr(ip), Type: cluster.TypeANY, Port: 8080, USIP: true}); err != nil {
			t.Fatalf("add service %s: %v", name, err)
		}
		f.status.SetHealth(name, api.HealthUp)
	}
	if _, err := f.client.AddVServer(c, cluster.VServer{Name: "vs1", Type: cluster.TypeANY, VIP: mustAddr("203.0.113.10"), Port: 80,
		LBMethod: cluster.MethodSrcIPSrcPortHash, ConnFailover: cluster.FailoverStateless}); err != nil {
		t.Fatalf("add vserver: %v", err)
	}
	for _, s := range []string{"web1", "web2", "web3"} {
		if _, err := f.client.Bind(c, "vs1", s, 0); err != nil {
			t.Fatalf("bind %s: %v", s, err)
		}
	}
}

func TestVerbsChangeTheStore(t *testing.T) {
	f := newFixture(t)
	statelessSetup(t, f)
	c := ctx(t)
	cfg := f.store.Config()
	if len(cfg.Services) != 3 || len(cfg.VServers) != 1 || len(cfg.Bindings) != 3 {
		t.Fatalf("store holds %d services, %d vservers, %d bindings; want 3, 1, 3", len(cfg.Services), len(cfg.VServers), len(cfg.Bindings))
	}
	if b, _ := cfg.Binding("vs1", "web1"); b.Weight != 1 {
		t.Errorf("default weight = %d, want 1", b.Weight)
	}
	mode := cluster.FailoverStateful
	res, err := f.client.SetVServer(c, "vs1", api.VServerPatch{ConnFailover: &mode})
	if err != nil {
		t.Fatal(err)
	}
	want := "changed vserver vs1: connFailover: STATELESS -> STATEFUL"
	if len(res.Changes) != 1 || res.Changes[0].String() != want {
		t.Errorf("changes = %v, want [%s]", res.Changes, want)
	}
	if res.Digest != f.store.Digest() {
		t.Errorf("result digest %s, store digest %s", res.Digest, f.store.Digest())
	}
	// Same value again: nothing changes.
	res, err = f.client.SetVServer(c, "vs1", api.VServerPatch{ConnFailover: &mode})
	if err != nil || len(res.Changes) != 0 {
		t.Errorf("repeated set: changes %v, err %v; want none", res.Changes, err)
	}
	if _, err := f.client.Unbind(c, "vs1", "web3"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.RemoveService(c, "web3"); err != nil {
		t.Fatal(err)
	}
	if _, ok := func() (*cluster.Service, bool) { c := f.store.Config(); return c.Service("web3") }(); ok {
		t.Error("web3 still in the store after rm")
	}
	if _, err := f.client.RemoveVServer(c, "vs1"); err != nil {
		t.Fatal(err)
	}
	if cfg := f.store.Config(); len(cfg.VServers) != 0 || len(cfg.Bindings) != 0 {
		t.Errorf("after rm lb vserver: %d vservers, %d bindings", len(cfg.VServers), len(cfg.Bindings))
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	statelessSetup(t, f)
	c := ctx(t)
	before := f.store.Digest()

	no := false
	_, err := f.client.SetService(c, "web1", api.ServicePatch{USIP: &no})
	var e *api.Error
	if !errors.As(err, &e) || e.Status != http.StatusUnprocessableEntity || e.Rule != cluster.RuleStatelessUSIP || e.Fix == "" {
		t.Fatalf("usip off on a stateless binding: got %#v, want 422 rule %s with a fix", err, cluster.RuleStatelessUSIP)
	}
	if !errors.Is(err, api.ErrRule) {
		t.Error("422 error does not match api.ErrRule")
	}
	_, err = f.client.AddService(c, cluster.Service{Name: "web1", IP: mustAddr("10.0.2.99"), Type: cluster.TypeANY, Port: 1, USIP: true})
	if !errors.Is(err, api.ErrExists) {
		t.Errorf("duplicate add: %v, want ErrExists (409)", err)
	}
	_, err = f.client.RemoveService(c, "nope")
	if !errors.Is(err, api.ErrNotFound) {
		t.Errorf("rm unknown: %v, want ErrNotFound", err)
	}
	_, err = f.client.RemoveService(c, "web1")
	if !errors.As(err, &e) || e.Rule != cluster.RuleUnbindFirst {
		t.Errorf("rm bound service: %v, want rule %s", err, cluster.RuleUnbindFirst)
	}
	_, err = f.client.Bind(c, "vs1", "ghost", 0)
	if !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bind unknown service: %v, want ErrNotFound", err)
	}
	if _, err := f.client.Node(c, "n9"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("show node n9: %v, want ErrNotFound", err)
	}
	if f.store.Digest() != before {
		t.Error("a refused change modified the store")
	}
}

func TestApplyIsOneIdempotentUpdate(t *testing.T) {
	f := newFixture(t)
	statelessSetup(t, f)
	c := ctx(t)
	doc, err := f.client.Config(c)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.client.Apply(c, api.ApplyRequest{Config: doc.Config})
	if err != nil || len(res.Changes) != 0 {
		t.Fatalf("re-applying the exported config: changes %v, err %v; want none", res.Changes, err)
	}
	want := doc.Config.Clone()
	want.Services = append(want.Services, cluster.Service{Name: "web4", IP: mustAddr("10.0.2.14"), Type: cluster.TypeANY, Port: 8080, USIP: false})
	want.Bindings = append(want.Bindings, cluster.Binding{VServer: "vs1", Service: "web4"})
	before := f.store.Digest()
	_, err = f.client.Apply(c, api.ApplyRequest{Config: want})
	var e *api.Error
	if !errors.As(err, &e) || e.Rule != cluster.RuleStatelessUSIP {
		t.Fatalf("apply breaking stateless-usip: %v", err)
	}
	if f.store.Digest() != before {
		t.Fatal("refused apply changed the store (half-applied)")
	}
	want.Services[len(want.Services)-1].USIP = true
	res, err = f.client.Apply(c, api.ApplyRequest{Config: want, DryRun: true})
	if err != nil || !res.DryRun || len(res.Changes) != 2 || f.store.Digest() != before {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	res, err = f.client.Apply(c, api.ApplyRequest{Config: want})
	if err != nil || len(res.Changes) != 2 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	// Prune: a file with only web1 bound removes the rest.
	small := cluster.Config{
		Services: []cluster.Service{{Name: "web1", IP: mustAddr("10.0.2.11"), Type: cluster.TypeANY, Port: 8080, USIP: true}},
		VServers: doc.Config.VServers,
		Bindings: []cluster.Binding{{VServer: "vs1", Service: "web1"}},
	}
	res, err = f.client.Apply(c, api.ApplyRequest{Config: small})
	if err != nil || len(res.Changes) != 0 {
		t.Fatalf("apply subset without prune: %v, %v; want no changes", res.Changes, err)
	}
	res, err = f.client.Apply(c, api.ApplyRequest{Config: small, Prune: true})
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, ch := range res.Changes {
		if ch.Action != api.Removed {
			t.Errorf("unexpected change %s", ch)
		}
		removed = append(removed, ch.String())
	}
	if got := strings.Join(removed, "; "); got != "removed service web2; removed service web3; removed service web4; removed binding vs1/web2; removed binding vs1/web3; removed binding vs1/web4" {
		t.Errorf("prune removed: %s", got)
	}
}

func TestExplainMatchesHashing(t *testing.T) {
	f := newFixture(t)
	statelessSetup(t, f)
	c := ctx(t)
	tables, err := f.status.Tables(c)
	if err != nil || len(tables) != 1 {
		t.Fatalf("tables: %v %v", tables, err)
	}
	tb := tables[0]
	for port := uint16(40000); port < 40050; port++ {
		src := netip.AddrPortFrom(mustAddr("198.51.100.7"), port)
		ex, err := f.client.Explain(c, api.ExplainRequest{Src: src, Dst: netip.MustParseAddrPort("203.0.113.10:80"), Proto: "tcp"})
		if err != nil {
			t.Fatal(err)
		}
		// Independent computation, straight from the hashing spec.
		h := hashing.PacketHash(hashing.VServerSeed("vs1"), src.Addr(), port, true)
		slot := h % uint32(len(tb.Slots))
		want := tb.Backends[tb.Slots[slot]]
		if ex.Hash != h || ex.Slot != slot || ex.Service != want || ex.VServer != "vs1" || ex.Mode != "table" {
			t.Fatalf("explain %s: got hash %x slot %d service %s; want %x %d %s", src, ex.Hash, ex.Slot, ex.Service, h, slot, want)
		}
		if ex.Backend.Port() != 8080 {
			t.Fatalf("backend %s, want port 8080", ex.Backend)
		}
	}
	if _, err := f.client.Explain(c, api.ExplainRequest{Src: netip.MustParseAddrPort("1.2.3.4:5"), Dst: netip.MustParseAddrPort("203.0.113.10:81"), Proto: "TCP"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("explain to an unknown port: %v, want ErrNotFound", err)
	}
	if _, err := f.client.Explain(c, api.ExplainRequest{Src: netip.MustParseAddrPort("1.2.3.4:5"), Dst: netip.MustParseAddrPort("203.0.113.10:80"), Proto: "SCTP"}); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("explain SCTP: %v, want ErrBadRequest", err)
	}
}

func TestExplainOwnerPair(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	if _, err := f.client.AddVServer(c, cluster.VServer{Name: "tcp1", Type: cluster.TypeTCP, VIP: mustAddr("2001:db8::10"), Port: 21,
		LBMethod: cluster.MethodLeastConnection, ConnFailover: cluster.FailoverStateful}); err != nil {
		t.Fatal(err)
	}
	// FTP flows are owned by the client's address alone (control and
	// data connections meet at one owner)
	if _, err := f.client.AddVServer(c, cluster.VServer{Name: "ftp1", Type: cluster.TypeFTP, VIP: mustAddr("2001:db8::11"), Port: 21,
		LBMethod: cluster.MethodLeastConnection, ConnFailover: cluster.FailoverStateful}); err != nil {
		t.Fatal(err)
	}
	f.status.SetCluster(api.ClusterStatus{Self: "n1",
		Members: []api.Member{{ID: "n1", Pair: 1, State: api.MemberAlive}, {ID: "n2", Pair: 1, State: api.MemberAlive},
			{ID: "n3", Pair: 2, State: api.MemberAlive}, {ID: "n4", Pair: 2, State: api.MemberDead}},
		Pairs: []api.Pair{{ID: 1, Members: []string{"n1", "n2"}, Active: "n1", Protected: true},
			{ID: 2, Members: []string{"n3", "n4"}, Active: "n3", Protected: false}},
	})
	seen := map[uint32]bool{}
	for port := uint16(1000); port < 1064; port++ {
		src := netip.AddrPortFrom(mustAddr("2001:db8:1::7"), port)
		ex, err := f.client.Explain(c, api.ExplainRequest{Src: src, Dst: netip.MustParseAddrPort("[2001:db8::10]:21"), Proto: "TCP"})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := hashing.Owner(hashing.OwnerKey{Addr: src.Addr(), Port: port}, []uint32{1, 2})
		if ex.Mode != "owner" || ex.OwnerPair != want || ex.Mirrored != (want == 1) {
			t.Fatalf("explain %s: mode %s owner %d mirrored %v; want owner %d", src, ex.Mode, ex.OwnerPair, ex.Mirrored, want)
		}
		seen[ex.OwnerPair] = true
	}
	if !seen[1] || !seen[2] {
		t.Errorf("64 flows all went to one pair: %v", seen)
	}
	for port := uint16(1000); port < 1016; port++ {
		src := netip.AddrPortFrom(mustAddr("2001:db8:1::7"), port)
		ex, err := f.client.Explain(c, api.ExplainRequest{Src: src, Dst: netip.MustParseAddrPort("[2001:db8::11]:21"), Proto: "TCP"})
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := hashing.Owner(hashing.OwnerKey{Addr: src.Addr()}, []uint32{1, 2}); ex.OwnerPair != want {
			t.Fatalf("explain FTP %s: owner %d, want %d (by the address alone)", src, ex.OwnerPair, want)
		}
	}
}

func TestDrainAndStatus(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	f.status.SetCluster(api.ClusterStatus{Self: "n1", Members: []api.Member{
		{ID: "n1", Pair: 1, State: api.MemberAlive, Digest: f.store.Digest()},
		{ID: "n2", Pair: 1, State: api.MemberAlive, Digest: "old"}}})
	cv, err := f.client.Cluster(c)
	if err != nil || cv.DigestAgree || len(cv.Members) != 2 {
		t.Fatalf("cluster: %+v %v; want 2 members that disagree", cv, err)
	}
	if _, err := f.client.Drain(c, "n2"); err != nil {
		t.Fatal(err)
	}
	n, err := f.client.Node(c, "n2")
	if err != nil || !n.Drained {
		t.Fatalf("node n2 after drain: %+v %v", n, err)
	}
	if _, err := f.client.Undrain(c, "n2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.client.Node(c, "n2"); n.Drained {
		t.Error("n2 still drained after undrain")
	}
	if _, err := f.client.Drain(c, "n7"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("drain n7: %v, want ErrNotFound", err)
	}
	if _, err := f.client.Connections(c, api.ConnFilter{VServer: "nope"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("connections of an unknown vserver: %v, want ErrNotFound", err)
	}
}

func TestTCPAuth(t *testing.T) {
	store := apitest.NewStore(t)
	status := apitest.NewStatus(store)
	const token = "0123456789abcdef0123"
	h, err := api.Authenticate(api.AuthConfig{Token: token, ClientCerts: true}, apitest.NewHandler(t, store, status))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	base := &tls.Config{RootCAs: pool}
	clientCert, clientCAs := clientCertificate(t)
	srv.TLS.ClientCAs = clientCAs
	c := ctx(t)
	svc := cluster.Service{Name: "web1", IP: mustAddr("10.0.2.11"), Type: cluster.TypeANY, Port: 8080, USIP: true}

	for _, tok := range []string{"", "wrong-token-wrong-token", token + "x"} {
		cl, err := api.NewClient(api.ClientConfig{Node: srv.URL, Token: tok, TLS: base})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.AddService(c, svc)
		if !errors.Is(err, api.ErrUnauthorized) {
			t.Errorf("token %q: %v, want 401", tok, err)
		}
		if _, err := cl.Config(c); !errors.Is(err, api.ErrUnauthorized) {
			t.Errorf("token %q read: %v, want 401", tok, err)
		}
		cl.Close()
	}
	if cfg := store.Config(); len(cfg.Services) != 0 {
		t.Fatal("an unauthenticated request changed the configuration")
	}
	// A bearer token over plain HTTP is refused by the client.
	if _, err := api.NewClient(api.ClientConfig{Node: strings.Replace(srv.URL, "https", "http", 1), Token: token}); err == nil {
		t.Error("client accepted an http:// node")
	}
	ok, err := api.NewClient(api.ClientConfig{Node: srv.URL, Token: token, TLS: base})
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	if _, err := ok.AddService(c, svc); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	// Mutual TLS without a token.
	mtls := base.Clone()
	mtls.Certificates = []tls.Certificate{clientCert}
	cm, err := api.NewClient(api.ClientConfig{Node: srv.URL, TLS: mtls})
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	if _, err := cm.Services(c); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if _, err := api.Authenticate(api.AuthConfig{}, h); err == nil {
		t.Error("Authenticate accepted a config with no method")
	}
	if _, err := api.Authenticate(api.AuthConfig{Token: "short"}, h); err == nil {
		t.Error("Authenticate accepted a 5-character token")
	}
}

// clientCertificate makes a CA and a client certificate it signs.
func clientCertificate(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tandem test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "operator"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}
