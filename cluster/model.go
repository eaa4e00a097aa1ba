package cluster

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// This file defines the LB configuration model: the objects operators create
// with clusterctl and that every node replicates. The names and values follow
// the grammar ADC operators know (ANY, SRCIPSRCPORTHASH, -usip YES, ...).
//
// The model is plain data. Rules that relate objects to each other (the
// connection-failover table of DESIGN.md) are checked by Config.Validate.

// ServiceType is the protocol type of a service or vserver.
type ServiceType string

const (
	TypeANY       ServiceType = "ANY"
	TypeTCP       ServiceType = "TCP"
	TypeUDP       ServiceType = "UDP"
	TypeFTP       ServiceType = "FTP"
	TypeSSLBridge ServiceType = "SSL_BRIDGE"
	// HTTP and SSL exist so that connection failover on them is refused with
	// the reason; Tandem does not terminate them.
	TypeHTTP ServiceType = "HTTP"
	TypeSSL  ServiceType = "SSL"
)

// ServiceTypes lists every service type, in the order help texts show them.
var ServiceTypes = []ServiceType{TypeANY, TypeTCP, TypeUDP, TypeFTP, TypeSSLBridge, TypeHTTP, TypeSSL}

// LBMethod is how a vserver picks a backend for a new flow.
type LBMethod string

const (
	MethodRoundRobin       LBMethod = "ROUNDROBIN"
	MethodLeastConnection  LBMethod = "LEASTCONNECTION"
	MethodSourceIPHash     LBMethod = "SOURCEIPHASH"
	MethodSrcIPSrcPortHash LBMethod = "SRCIPSRCPORTHASH"
)

// LBMethods lists every method.
var LBMethods = []LBMethod{MethodRoundRobin, MethodLeastConnection, MethodSourceIPHash, MethodSrcIPSrcPortHash}

// Persistence is the persistence type of a vserver.
type Persistence string

const (
	PersistNone     Persistence = "NONE"
	PersistSourceIP Persistence = "SOURCEIP"
	// PersistSSLSession keeps TLS clients that resume a session (by session
	// id, or by SNI name) on the same backend. SSL_BRIDGE only.
	PersistSSLSession Persistence = "SSLSESSION"
)

// Persistences lists every persistence type.
var Persistences = []Persistence{PersistNone, PersistSourceIP, PersistSSLSession}

// ConnFailover is a vserver's connection-failover mode.
type ConnFailover string

const (
	FailoverDisabled  ConnFailover = "DISABLED"
	FailoverStateless ConnFailover = "STATELESS"
	FailoverStateful  ConnFailover = "STATEFUL"
)

// ConnFailovers lists every mode.
var ConnFailovers = []ConnFailover{FailoverDisabled, FailoverStateless, FailoverStateful}

// FwdMode is how packets reach a backend.
type FwdMode string

const (
	FwdNAT FwdMode = "NAT"
	FwdDSR FwdMode = "DSR"
)

// FwdModes lists every forwarding mode.
var FwdModes = []FwdMode{FwdNAT, FwdDSR}

// MonitorType is the kind of health probe.
type MonitorType string

const (
	MonitorTCP MonitorType = "TCP"
)

// Service is a backend server and port (an ADC "service").
type Service struct {
	Name string      `json:"name" yaml:"name"`
	IP   netip.Addr  `json:"ip" yaml:"ip"`
	Type ServiceType `json:"type" yaml:"type"`
	// Port 0 means "*" (any port), allowed for type ANY only.
	Port uint16 `json:"port" yaml:"port"`
	// USIP keeps the client's source address towards the backend.
	USIP bool `json:"usip" yaml:"usip"`
	// Monitor names a Monitor; empty means the default TCP monitor.
	Monitor string `json:"monitor,omitempty" yaml:"monitor,omitempty"`
}

// VServer is a virtual server: a VIP, port and protocol that clients reach.
type VServer struct {
	Name string      `json:"name" yaml:"name"`
	Type ServiceType `json:"type" yaml:"type"`
	VIP  netip.Addr  `json:"vip" yaml:"vip"`
	// Port 0 means "*" (any port), allowed for type ANY only.
	Port         uint16       `json:"port" yaml:"port"`
	LBMethod     LBMethod     `json:"lbMethod" yaml:"lbMethod"`
	Persistence  Persistence  `json:"persistenceType" yaml:"persistenceType"`
	ConnFailover ConnFailover `json:"connFailover" yaml:"connFailover"`
	FwdMode      FwdMode      `json:"fwdMode" yaml:"fwdMode"`
}

// Binding attaches a service to a vserver with a weight (default 1).
type Binding struct {
	VServer string `json:"vserver" yaml:"vserver"`
	Service string `json:"service" yaml:"service"`
	Weight  uint32 `json:"weight" yaml:"weight"`
}

// Monitor is a health probe definition.
type Monitor struct {
	Name     string        `json:"name" yaml:"name"`
	Type     MonitorType   `json:"type" yaml:"type"`
	Interval time.Duration `json:"interval" yaml:"interval"` // default 1s
	Timeout  time.Duration `json:"timeout" yaml:"timeout"`   // default 500ms
	Rise     int           `json:"rise" yaml:"rise"`         // default 2
	Fall     int           `json:"fall" yaml:"fall"`         // default 2
}

// Config is the whole LB configuration, the document every node replicates.
// Slices are kept sorted by name (bindings by vserver, then service) so that
// equal configurations encode identically and have equal digests.
type Config struct {
	Services []Service `json:"services" yaml:"services"`
	VServers []VServer `json:"vservers" yaml:"vservers"`
	Bindings []Binding `json:"bindings" yaml:"bindings"`
	Monitors []Monitor `json:"monitors,omitempty" yaml:"monitors,omitempty"`
}

// ParseServiceType parses a type name, case-insensitively.
func ParseServiceType(s string) (ServiceType, error) {
	return parseEnum("service type", s, ServiceTypes)
}

// ParseLBMethod parses a method name, case-insensitively.
func ParseLBMethod(s string) (LBMethod, error) { return parseEnum("LB method", s, LBMethods) }

// ParsePersistence parses a persistence type, case-insensitively.
func ParsePersistence(s string) (Persistence, error) {
	return parseEnum("persistence type", s, Persistences)
}

// ParseConnFailover parses a connection-failover mode, case-insensitively.
func ParseConnFailover(s string) (ConnFailover, error) {
	return parseEnum("connFailover", s, ConnFailovers)
}

// ParseFwdMode parses a forwarding mode, case-insensitively.
func ParseFwdMode(s string) (FwdMode, error) { return parseEnum("fwdMode", s, FwdModes) }

// ParsePort parses a port number or "*" (returned as 0).
func ParsePort(s string) (uint16, error) {
	if s == "*" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: want 1-65535 or *", s)
	}
	return uint16(n), nil
}

// FormatPort formats a port, 0 as "*".
func FormatPort(p uint16) string {
	if p == 0 {
		return "*"
	}
	return strconv.Itoa(int(p))
}

// ParseYesNo parses YES/NO (also ON/OFF, true/false), case-insensitively.
func ParseYesNo(s string) (bool, error) {
	switch strings.ToUpper(s) {
	case "YES", "ON", "TRUE":
		return true, nil
	case "NO", "OFF", "FALSE":
		return false, nil
	}
	return false, fmt.Errorf("invalid value %q: want YES or NO", s)
}

func parseEnum[T ~string](what, s string, all []T) (T, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	for _, v := range all {
		if string(v) == u {
			return v, nil
		}
	}
	names := make([]string, len(all))
	for i, v := range all {
		names[i] = string(v)
	}
	var zero T
	return zero, fmt.Errorf("invalid %s %q: want one of %s", what, s, strings.Join(names, ", "))
}
