package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/tandem-lb/tandem/cluster"
	"github.com/tandem-lb/tandem/node/api"
)

// cli is clusterctl's grammar. Flags are written here with two dashes;
// RewriteArgs lets operators type them ADC-style with one.
type cli struct {
	Node   string `help:"Node to talk to: its API unix socket or an https:// URL (env TANDEM_NODE)." default:"${node}" placeholder:"SOCKET|URL"`
	Token  string `help:"Bearer token for an https:// node (env TANDEM_TOKEN)." placeholder:"TOKEN"`
	Output string `short:"o" help:"Output format: table, json or yaml." enum:"table,json,yaml" default:"table"`

	Add        addCmd        `cmd:"" help:"Add a service, lb vserver or lb monitor."`
	Set        setCmd        `cmd:"" help:"Change a service's, lb vserver's or lb monitor's settings."`
	Rm         rmCmd         `cmd:"" help:"Remove a service, lb vserver or lb monitor."`
	Bind       bindCmd       `cmd:"" help:"Bind a service to an lb vserver."`
	Unbind     unbindCmd     `cmd:"" help:"Unbind a service from an lb vserver."`
	Show       showCmd       `cmd:"" help:"Show configuration and state (changes nothing)."`
	Explain    explainCmd    `cmd:"" help:"Explain where a flow goes (changes nothing)."`
	Drain      drainCmd      `cmd:"" help:"Drain a node: shift its traffic away gracefully."`
	Undrain    undrainCmd    `cmd:"" help:"Undrain a node."`
	Apply      applyCmd      `cmd:"" help:"Apply a declarative YAML configuration in one update."`
	Batch      batchCmd      `cmd:"" help:"Run a file of clusterctl commands, stopping at the first error."`
	Completion completionCmd `cmd:"" help:"Print a shell completion script (bash or zsh)."`
}

// Help is the root help's detail.
func (c *cli) Help() string {
	return "Examples:\n\n" +
		"    clusterctl add service web1 10.0.2.11 ANY 8080 -usip YES\n" +
		"    clusterctl add lb vserver vs1 ANY 203.0.113.10 80 -lbMethod SRCIPSRCPORTHASH -connFailover STATELESS\n" +
		"    clusterctl bind lb vserver vs1 web1\n" +
		"    clusterctl show lb vserver vs1\n" +
		"    clusterctl explain flow 198.51.100.7:41234 203.0.113.10:80 TCP\n" +
		"    clusterctl --node https://10.0.9.1:8443 --token $TOKEN show cluster\n\n" +
		"Verbs (add, set, rm, bind, unbind, drain, undrain, apply, batch) change state;\n" +
		"a refused verb changes nothing and names the rule it breaks and the fix.\n" +
		"Nouns (show, explain) change nothing."
}

// session is what a command's Run gets: the runner and the global flags.
type session struct {
	*runner
	out    io.Writer
	node   string
	token  string
	format string
}

func (s *session) api() (*api.Client, error) { return s.client(s.node, s.token) }

// verb runs a state-changing call and prints its changes.
func (s *session) verb(call func(*api.Client) (api.Result, error)) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	res, err := call(c)
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) error { return printResult(w, res) })
}

// ---- add / set / rm ----

type addCmd struct {
	Service addServiceCmd `cmd:"" help:"Add a service (a backend server and port)."`
	LB      addLBCmd      `cmd:"" name:"lb" help:"Add an lb vserver or lb monitor."`
}

type addLBCmd struct {
	VServer addVServerCmd `cmd:"" name:"vserver" help:"Add an lb vserver (a VIP, port and protocol)."`
	Monitor addMonitorCmd `cmd:"" name:"monitor" help:"Add a health monitor."`
}

type setCmd struct {
	Service setServiceCmd `cmd:"" help:"Change a service's settings."`
	LB      setLBCmd      `cmd:"" name:"lb" help:"Change an lb vserver's or lb monitor's settings."`
}

type setLBCmd struct {
	VServer setVServerCmd `cmd:"" name:"vserver" help:"Change an lb vserver's settings."`
	Monitor setMonitorCmd `cmd:"" name:"monitor" help:"Change a monitor's timings."`
}

type rmCmd struct {
	Service rmServiceCmd `cmd:"" help:"Remove a service (unbind it first)."`
	LB      rmLBCmd      `cmd:"" name:"lb" help:"Remove an lb vserver or lb monitor."`
}

type rmLBCmd struct {
	VServer rmVServerCmd `cmd:"" name:"vserver" help:"Remove an lb vserver and its bindings."`
	Monitor rmMonitorCmd `cmd:"" name:"monitor" help:"Remove a monitor no service uses."`
}

type addServiceCmd struct {
	Name    string `arg:"" help:"Service name."`
	IP      string `arg:"" name:"ip" help:"Backend IPv4 or IPv6 address."`
	Type    string `arg:"" help:"ANY, TCP, UDP, FTP, SSL_BRIDGE, HTTP or SSL."`
	Port    string `arg:"" help:"Backend port, or * (type ANY only)."`
	USIP    string `name:"usip" help:"Keep the client's source IP towards the backend: YES or NO (default NO)." placeholder:"YES|NO"`
	Monitor string `help:"Health monitor name (default: the built-in TCP monitor)." placeholder:"NAME"`
}

func (c *addServiceCmd) Help() string {
	return "Example:\n\n    clusterctl add service web1 10.0.2.11 ANY 8080 -usip YES"
}

func (c *addServiceCmd) Run(s *session) error {
	ip, err := netip.ParseAddr(c.IP)
	if err != nil {
		return usagef("invalid IP address %q", c.IP)
	}
	t, err := cluster.ParseServiceType(c.Type)
	if err != nil {
		return usagef("%v", err)
	}
	port, err := cluster.ParsePort(c.Port)
	if err != nil {
		return usagef("%v", err)
	}
	usip := false
	if c.USIP != "" {
		if usip, err = cluster.ParseYesNo(c.USIP); err != nil {
			return usagef("-usip: %v", err)
		}
	}
	svc := cluster.Service{Name: c.Name, IP: ip, Type: t, Port: port, USIP: usip, Monitor: c.Monitor}
	return s.verb(func(a *api.Client) (api.Result, error) { return a.AddService(s.ctx, svc) })
}

type setServiceCmd struct {
	Name    string  `arg:"" help:"Service name."`
	USIP    string  `name:"usip" help:"YES or NO." placeholder:"YES|NO"`
	Monitor *string `help:"Health monitor name; \"\" for the built-in TCP monitor." placeholder:"NAME"`
}

func (c *setServiceCmd) Help() string {
	return "Example:\n\n    clusterctl set service web1 -usip YES -monitor tcp-fast"
}

func (c *setServiceCmd) Run(s *session) error {
	var p api.ServicePatch
	if c.USIP != "" {
		v, err := cluster.ParseYesNo(c.USIP)
		if err != nil {
			return usagef("-usip: %v", err)
		}
		p.USIP = &v
	}
	p.Monitor = c.Monitor
	if p.USIP == nil && p.Monitor == nil {
		return usagef("nothing to set: give -usip or -monitor")
	}
	return s.verb(func(a *api.Client) (api.Result, error) { return a.SetService(s.ctx, c.Name, p) })
}

type rmServiceCmd struct {
	Name string `arg:"" help:"Service name."`
}

func (c *rmServiceCmd) Help() string { return "Example:\n\n    clusterctl rm service web1" }

func (c *rmServiceCmd) Run(s *session) error {
	return s.verb(func(a *api.Client) (api.Result, error) { return a.RemoveService(s.ctx, c.Name) })
}

// vserverSettings are the settings add and set lb vserver share.
type vserverSettings struct {
	LBMethod     string `name:"lbMethod" help:"ROUNDROBIN, LEASTCONNECTION, SOURCEIPHASH or SRCIPSRCPORTHASH (default LEASTCONNECTION)." placeholder:"METHOD"`
	Persistence  string `name:"persistenceType" help:"NONE, SOURCEIP or SSLSESSION (default NONE)." placeholder:"TYPE"`
	ConnFailover string `name:"connFailover" help:"DISABLED, STATELESS or STATEFUL (default DISABLED)." placeholder:"MODE"`
	FwdMode      string `name:"fwdMode" help:"NAT or DSR (default NAT)." placeholder:"MODE"`
}

func (v *vserverSettings) patch() (api.VServerPatch, error) {
	var p api.VServerPatch
	if v.LBMethod != "" {
		m, err := cluster.ParseLBMethod(v.LBMethod)
		if err != nil {
			return p, usagef("-lbMethod: %v", err)
		}
		p.LBMethod = &m
	}
	if v.Persistence != "" {
		m, err := cluster.ParsePersistence(v.Persistence)
		if err != nil {
			return p, usagef("-persistenceType: %v", err)
		}
		p.Persistence = &m
	}
	if v.ConnFailover != "" {
		m, err := cluster.ParseConnFailover(v.ConnFailover)
		if err != nil {
			return p, usagef("-connFailover: %v", err)
		}
		p.ConnFailover = &m
	}
	if v.FwdMode != "" {
		m, err := cluster.ParseFwdMode(v.FwdMode)
		if err != nil {
			return p, usagef("-fwdMode: %v", err)
		}
		p.FwdMode = &m
	}
	return p, nil
}

type addVServerCmd struct {
	Name string `arg:"" help:"Vserver name."`
	Type string `arg:"" help:"ANY, TCP, UDP, FTP, SSL_BRIDGE, HTTP or SSL."`
	VIP  string `arg:"" name:"vip" help:"Virtual IPv4 or IPv6 address."`
	Port string `arg:"" help:"Port, or * (type ANY only)."`
	vserverSettings
}

func (c *addVServerCmd) Help() string {
	return "Examples:\n\n" +
		"    clusterctl add lb vserver vs1 ANY 203.0.113.10 80 -lbMethod SRCIPSRCPORTHASH -connFailover STATELESS\n" +
		"    clusterctl add lb vserver ftp1 FTP 203.0.113.10 21 -lbMethod LEASTCONNECTION -connFailover STATEFUL"
}

func (c *addVServerCmd) Run(s *session) error {
	t, err := cluster.ParseServiceType(c.Type)
	if err != nil {
		return usagef("%v", err)
	}
	vip, err := netip.ParseAddr(c.VIP)
	if err != nil {
		return usagef("invalid VIP %q", c.VIP)
	}
	port, err := cluster.ParsePort(c.Port)
	if err != nil {
		return usagef("%v", err)
	}
	p, err := c.patch()
	if err != nil {
		return err
	}
	v := cluster.VServer{Name: c.Name, Type: t, VIP: vip, Port: port}
	if p.LBMethod != nil {
		v.LBMethod = *p.LBMethod
	}
	if p.Persistence != nil {
		v.Persistence = *p.Persistence
	}
	if p.ConnFailover != nil {
		v.ConnFailover = *p.ConnFailover
	}
	if p.FwdMode != nil {
		v.FwdMode = *p.FwdMode
	}
	return s.verb(func(a *api.Client) (api.Result, error) { return a.AddVServer(s.ctx, v) })
}

type setVServerCmd struct {
	Name string `arg:"" help:"Vserver name."`
	vserverSettings
}

func (c *setVServerCmd) Help() string {
	return "Example:\n\n    clusterctl set lb vserver ftp1 -connFailover DISABLED"
}

func (c *setVServerCmd) Run(s *session) error {
	p, err := c.patch()
	if err != nil {
		return err
	}
	if p == (api.VServerPatch{}) {
		return usagef("nothing to set: give -lbMethod, -persistenceType, -connFailover or -fwdMode")
	}
	return s.verb(func(a *api.Client) (api.Result, error) { return a.SetVServer(s.ctx, c.Name, p) })
}

type rmVServerCmd struct {
	Name string `arg:"" help:"Vserver name."`
}

func (c *rmVServerCmd) Help() string { return "Example:\n\n    clusterctl rm lb vserver vs1" }

func (c *rmVServerCmd) Run(s *session) error {
	return s.verb(func(a *api.Client) (api.Result, error) { return a.RemoveVServer(s.ctx, c.Name) })
}

type addMonitorCmd struct {
	Name     string        `arg:"" help:"Monitor name."`
	Type     string        `arg:"" help:"Probe type: TCP (connect)."`
	Interval time.Duration `help:"Time between probes (default 1s)."`
	Timeout  time.Duration `help:"Probe timeout, below the interval (default 500ms)."`
	Rise     int           `help:"Successes that bring a backend UP (default 2)."`
	Fall     int           `help:"Failures that bring a backend DOWN (default 2)."`
}

func (c *addMonitorCmd) Help() string {
	return "Example:\n\n    clusterctl add lb monitor tcp-fast TCP -interval 1s -timeout 500ms -rise 2 -fall 2"
}

func (c *addMonitorCmd) Run(s *session) error {
	if !strings.EqualFold(c.Type, string(cluster.MonitorTCP)) {
		return usagef("invalid monitor type %q: want TCP", c.Type)
	}
	m := cluster.Monitor{Name: c.Name, Type: cluster.MonitorTCP, Interval: c.Interval, Timeout: c.Timeout, Rise: c.Rise, Fall: c.Fall}
	return s.verb(func(a *api.Client) (api.Result, error) { return a.AddMonitor(s.ctx, m) })
}

type setMonitorCmd struct {
	Name     string         `arg:"" help:"Monitor name."`
	Interval *time.Duration `help:"Time between probes."`
	Timeout  *time.Duration `help:"Probe timeout, below the interval."`
	Rise     *int           `help:"Successes that bring a backend UP."`
	Fall     *int           `help:"Failures that bring a backend DOWN."`
}

func (c *setMonitorCmd) Help() string {
	return "Example:\n\n    clusterctl set lb monitor tcp-fast -interval 2s -timeout 1s"
}

func (c *setMonitorCmd) Run(s *session) error {
	p := api.MonitorPatch{Interval: c.Interval, Timeout: c.Timeout, Rise: c.Rise, Fall: c.Fall}
	if p == (api.MonitorPatch{}) {
		return usagef("nothing to set: give -interval, -timeout, -rise or -fall")
	}
	return s.verb(func(a *api.Client) (api.Result, error) { return a.SetMonitor(s.ctx, c.Name, p) })
}

type rmMonitorCmd struct {
	Name string `arg:"" help:"Monitor name."`
}

func (c *rmMonitorCmd) Help() string { return "Example:\n\n    clusterctl rm lb monitor tcp-fast" }

func (c *rmMonitorCmd) Run(s *session) error {
	return s.verb(func(a *api.Client) (api.Result, error) { return a.RemoveMonitor(s.ctx, c.Name) })
}

// ---- bind / unbind ----

type bindCmd struct {
	LB struct {
		VServer bindVServerCmd `cmd:"" name:"vserver" help:"Bind a service to an lb vserver."`
	} `cmd:"" name:"lb" help:"Bind a service to an lb vserver."`
}

type bindVServerCmd struct {
	Name    string `arg:"" help:"Vserver name."`
	Service string `arg:"" help:"Service name."`
	Weight  uint32 `help:"Relative share of new flows, 1-100 (default 1)."`
}

func (c *bindVServerCmd) Help() string {
	return "Example:\n\n    clusterctl bind lb vserver vs1 web1 -weight 2"
}

func (c *bindVServerCmd) Run(s *session) error {
	return s.verb(func(a *api.Client) (api.Result, error) { return a.Bind(s.ctx, c.Name, c.Service, c.Weight) })
}

type unbindCmd struct {
	LB struct {
		VServer unbindVServerCmd `cmd:"" name:"vserver" help:"Unbind a service from an lb vserver."`
	} `cmd:"" name:"lb" help:"Unbind a service from an lb vserver."`
}

type unbindVServerCmd struct {
	Name    string `arg:"" help:"Vserver name."`
	Service string `arg:"" help:"Service name."`
}

func (c *unbindVServerCmd) Help() string {
	return "Example:\n\n    clusterctl unbind lb vserver vs1 web1"
}

func (c *unbindVServerCmd) Run(s *session) error {
	return s.verb(func(a *api.Client) (api.Result, error) { return a.Unbind(s.ctx, c.Name, c.Service) })
}

// ---- drain / undrain ----

type drainCmd struct {
	Node drainNodeCmd `cmd:"" help:"Drain a node: announce with GRACEFUL_SHUTDOWN, sync its partner, withdraw."`
}

type drainNodeCmd struct {
	Name string `arg:"" help:"Node id."`
}

func (c *drainNodeCmd) Help() string { return "Example:\n\n    clusterctl drain node n3" }

func (c *drainNodeCmd) Run(s *session) error { return s.drain(c.Name, true) }

type undrainCmd struct {
	Node undrainNodeCmd `cmd:"" help:"Undrain a node: announce its VIPs again."`
}

type undrainNodeCmd struct {
	Name string `arg:"" help:"Node id."`
}

func (c *undrainNodeCmd) Help() string { return "Example:\n\n    clusterctl undrain node n3" }

func (c *undrainNodeCmd) Run(s *session) error { return s.drain(c.Name, false) }

func (s *session) drain(node string, drain bool) error {
	a, err := s.api()
	if err != nil {
		return err
	}
	var res api.DrainResult
	if drain {
		res, err = a.Drain(s.ctx, node)
	} else {
		res, err = a.Undrain(s.ctx, node)
	}
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) error {
		if res.Drained {
			_, err := fmt.Fprintf(w, "node %s drained\n", res.Node)
			return err
		}
		_, err := fmt.Fprintf(w, "node %s undrained\n", res.Node)
		return err
	})
}
