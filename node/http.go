package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/metrics"
)

type listenerSpec struct {
	what    string
	handler http.Handler
	listen  func(d *Daemon) (net.Listener, error)
}

// handlers returns what the daemon serves: the API on the unix socket
// (0600: root only) and, optionally, on TCP behind a token or mutual TLS;
// /metrics on its own address.
func (d *Daemon) handlers() ([]listenerSpec, error) {
	st := status{d}
	h, err := api.NewHandler(api.Config{Store: d.membership().Store(), Status: st, Drainer: st, Logger: d.log})
	if err != nil {
		return nil, fmt.Errorf("api handler: %w", err)
	}
	specs := []listenerSpec{{
		what: "api (unix)", handler: h,
		listen: func(d *Daemon) (net.Listener, error) { return api.ListenUnix(d.cfg.API.Socket) },
	}}
	if t := d.cfg.API.TCP; t != nil {
		spec := listenerSpec{what: "api (tcp)"}
		switch {
		case t.TokenFile != "":
			b, err := os.ReadFile(t.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("reading the api token: %w", err)
			}
			spec.handler, err = api.Authenticate(api.AuthConfig{Token: strings.TrimSpace(string(b))}, h)
			if err != nil {
				return nil, err
			}
			spec.listen = func(d *Daemon) (net.Listener, error) { return d.deps.Listen("tcp", t.Listen) }
		case t.TLS != nil:
			tc, err := serverTLS(t.TLS.Cert, t.TLS.Key, t.TLS.ClientCA)
			if err != nil {
				return nil, err
			}
			spec.handler, err = api.Authenticate(api.AuthConfig{ClientCerts: true}, h)
			if err != nil {
				return nil, err
			}
			spec.listen = func(d *Daemon) (net.Listener, error) {
				ln, err := d.deps.Listen("tcp", t.Listen)
				if err != nil {
					return nil, err
				}
				return tls.NewListener(ln, tc), nil
			}
		default:
			return nil, errors.New("api tcp listener without token or tls")
		}
		specs = append(specs, spec)
	}
	if d.cfg.Metrics.Listen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(metrics.New(metrics.Config{Source: st, Runtime: true})))
		specs = append(specs, listenerSpec{what: "metrics", handler: mux, listen: func(d *Daemon) (net.Listener, error) {
			return d.deps.Listen("tcp", d.cfg.Metrics.Listen)
		}})
	}
	return specs, nil
}

func serverTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the api certificate: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA %s holds no PEM certificate", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}
