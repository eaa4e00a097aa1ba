package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tandem-lb/tandem/cluster"
)

// DefaultSocket is where tandemd serves its API unix socket.
const DefaultSocket = "/run/tandem/tandemd.sock"

// DefaultClientTimeout is ClientConfig.Timeout's default.
const DefaultClientTimeout = 30 * time.Second

// ClientConfig configures NewClient.
type ClientConfig struct {
	// Node is a unix socket path ("/run/tandem/tandemd.sock" or
	// "unix:/run/...") or an https:// URL of a node's TCP listener.
	// Default DefaultSocket.
	Node string
	// Token is sent as a bearer token (https only). Default none.
	Token string
	// TLS configures https (root CAs, client certificate). Default: the
	// system roots, no client certificate.
	TLS *tls.Config
	// DialContext dials the unix socket. Default: a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds each request. Default DefaultClientTimeout.
	Timeout time.Duration
}

// Client talks to one node's API. It is safe for concurrent use.
type Client struct {
	node  string // as configured, for messages
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for cfg.Node.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Node == "" {
		cfg.Node = DefaultSocket
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultClientTimeout
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("api client: negative timeout %s", cfg.Timeout)
	}
	tr := &http.Transport{MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second, ForceAttemptHTTP2: false}
	c := &Client{node: cfg.Node, token: cfg.Token, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}}
	switch {
	case strings.HasPrefix(cfg.Node, "https://"):
		u, err := url.Parse(cfg.Node)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("api client: node %q is not a URL: want https://HOST:PORT", cfg.Node)
		}
		c.base = strings.TrimRight(u.String(), "/")
		tr.TLSClientConfig = cfg.TLS
	case strings.HasPrefix(cfg.Node, "http://"):
		return nil, fmt.Errorf("api client: node %q: the TCP API is served over https only", cfg.Node)
	default:
		path := strings.TrimPrefix(cfg.Node, "unix:")
		if cfg.Token != "" {
			// The socket is trusted; a token there is harmless but pointless.
			c.token = ""
		}
		dial := cfg.DialContext
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, "unix", path)
		}
		c.base = "http://tandem"
	}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL of a unix-socket request is made up; name the node.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach node %s: %w", c.node, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("%s %s: %s", method, path, strings.TrimSpace(string(data)))
		}
		e.Status = resp.StatusCode
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding response of %s %s: %w", method, path, err)
	}
	return nil
}

func esc(s string) string { return url.PathEscape(s) }

// Config returns the node's configuration and its digest.
func (c *Client) Config(ctx context.Context) (ConfigDoc, error) {
	var d ConfigDoc
	return d, c.do(ctx, http.MethodGet, "/v1/config", nil, &d)
}

// Apply makes the configuration hold want's objects (and only those with
// prune) in one update.
func (c *Client) Apply(ctx context.Context, req ApplyRequest) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPost, "/v1/apply", req, &r)
}

// Services lists services with their health.
func (c *Client) Services(ctx context.Context) ([]ServiceView, error) {
	var v []ServiceView
	return v, c.do(ctx, http.MethodGet, "/v1/services", nil, &v)
}

// Service returns one service.
func (c *Client) Service(ctx context.Context, name string) (ServiceView, error) {
	var v ServiceView
	return v, c.do(ctx, http.MethodGet, "/v1/services/"+esc(name), nil, &v)
}

// AddService adds a service.
func (c *Client) AddService(ctx context.Context, s cluster.Service) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPost, "/v1/services", s, &r)
}

// SetService changes a service's settings.
func (c *Client) SetService(ctx context.Context, name string, p ServicePatch) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPatch, "/v1/services/"+esc(name), p, &r)
}

// RemoveService removes a service.
func (c *Client) RemoveService(ctx context.Context, name string) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodDelete, "/v1/services/"+esc(name), nil, &r)
}

// VServers lists vservers with state, epoch, bindings and counters.
func (c *Client) VServers(ctx context.Context) ([]VServerView, error) {
	var v []VServerView
	return v, c.do(ctx, http.MethodGet, "/v1/vservers", nil, &v)
}

// VServer returns one vserver.
func (c *Client) VServer(ctx context.Context, name string) (VServerView, error) {
	var v VServerView
	return v, c.do(ctx, http.MethodGet, "/v1/vservers/"+esc(name), nil, &v)
}

// AddVServer adds a vserver.
func (c *Client) AddVServer(ctx context.Context, v cluster.VServer) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPost, "/v1/vservers", v, &r)
}

// SetVServer changes a vserver's settings.
func (c *Client) SetVServer(ctx context.Context, name string, p VServerPatch) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPatch, "/v1/vservers/"+esc(name), p, &r)
}

// RemoveVServer removes a vserver and its bindings.
func (c *Client) RemoveVServer(ctx context.Context, name string) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodDelete, "/v1/vservers/"+esc(name), nil, &r)
}

// Bind binds a service to a vserver; weight 0 means the default.
func (c *Client) Bind(ctx context.Context, vserver, service string, weight uint32) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPost, "/v1/vservers/"+esc(vserver)+"/bindings", BindRequest{Service: service, Weight: weight}, &r)
}

// Unbind unbinds a service from a vserver.
func (c *Client) Unbind(ctx context.Context, vserver, service string) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodDelete, "/v1/vservers/"+esc(vserver)+"/bindings/"+esc(service), nil, &r)
}

// Monitors lists monitors.
func (c *Client) Monitors(ctx context.Context) ([]cluster.Monitor, error) {
	var v []cluster.Monitor
	return v, c.do(ctx, http.MethodGet, "/v1/monitors", nil, &v)
}

// AddMonitor adds a monitor.
func (c *Client) AddMonitor(ctx context.Context, m cluster.Monitor) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPost, "/v1/monitors", m, &r)
}

// SetMonitor changes a monitor's timings.
func (c *Client) SetMonitor(ctx context.Context, name string, p MonitorPatch) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPatch, "/v1/monitors/"+esc(name), p, &r)
}

// RemoveMonitor removes a monitor.
func (c *Client) RemoveMonitor(ctx context.Context, name string) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodDelete, "/v1/monitors/"+esc(name), nil, &r)
}

// Cluster returns members, pairs, BGP sessions and digest agreement.
func (c *Client) Cluster(ctx context.Context) (ClusterView, error) {
	var v ClusterView
	return v, c.do(ctx, http.MethodGet, "/v1/cluster", nil, &v)
}

// Node returns one node in detail.
func (c *Client) Node(ctx context.Context, name string) (NodeStatus, error) {
	var v NodeStatus
	return v, c.do(ctx, http.MethodGet, "/v1/nodes/"+esc(name), nil, &v)
}

// Drain drains a node.
func (c *Client) Drain(ctx context.Context, name string) (DrainResult, error) {
	var v DrainResult
	return v, c.do(ctx, http.MethodPost, "/v1/nodes/"+esc(name)+"/drain", nil, &v)
}

// Undrain undrains a node.
func (c *Client) Undrain(ctx context.Context, name string) (DrainResult, error) {
	var v DrainResult
	return v, c.do(ctx, http.MethodPost, "/v1/nodes/"+esc(name)+"/undrain", nil, &v)
}

// RPCNodes lists the pairs' mirroring channels.
func (c *Client) RPCNodes(ctx context.Context) ([]RPCNode, error) {
	var v []RPCNode
	return v, c.do(ctx, http.MethodGet, "/v1/rpcnodes", nil, &v)
}

// Connections lists flow entries matching f.
func (c *Client) Connections(ctx context.Context, f ConnFilter) ([]Conn, error) {
	q := url.Values{}
	if f.VServer != "" {
		q.Set("vserver", f.VServer)
	}
	if f.Node != "" {
		q.Set("node", f.Node)
	}
	path := "/v1/connections"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var v []Conn
	return v, c.do(ctx, http.MethodGet, path, nil, &v)
}

// Explain asks which vserver, backend and owner a flow gets.
func (c *Client) Explain(ctx context.Context, req ExplainRequest) (Explanation, error) {
	var v Explanation
	return v, c.do(ctx, http.MethodPost, "/v1/explain", req, &v)
}

// IsConnError reports whether err is a failure to reach the node rather than
// a refusal from it.
func IsConnError(err error) bool {
	var e *Error
	return err != nil && !errors.As(err, &e)
}
