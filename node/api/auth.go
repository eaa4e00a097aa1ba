package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// AuthConfig configures Authenticate, the guard of the optional TCP
// listener. At least one method must be enabled: the TCP API is never open.
type AuthConfig struct {
	// Token is the bearer token clients send as "Authorization: Bearer
	// TOKEN". Empty disables token authentication.
	Token string
	// ClientCerts accepts requests whose TLS client certificate chain the
	// server verified. The listener's tls.Config must then set ClientCAs and
	// ClientAuth (tls.VerifyClientCertIfGiven with a token as well,
	// tls.RequireAndVerifyClientCert otherwise). Default false.
	ClientCerts bool
}

// MinTokenLen is the shortest token Authenticate accepts.
const MinTokenLen = 16

func (c *AuthConfig) validate() error {
	if c.Token == "" && !c.ClientCerts {
		return errors.New("api auth: a TCP listener needs a bearer token or client certificates: set a token of at least 16 characters, or enable mutual TLS")
	}
	if c.Token != "" && len(c.Token) < MinTokenLen {
		return fmt.Errorf("api auth: token is %d characters: use at least %d (e.g. openssl rand -hex 32)", len(c.Token), MinTokenLen)
	}
	return nil
}

// Authenticate wraps next so that only requests carrying the bearer token
// (compared in constant time) or a verified client certificate reach it.
// Others get 401 with a JSON Error and change nothing.
func Authenticate(cfg AuthConfig, next http.Handler) (http.Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Comparing digests keeps the comparison constant-time in the token's
	// length too.
	want := sha256.Sum256([]byte(cfg.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.ClientCerts && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			next.ServeHTTP(w, r)
			return
		}
		if cfg.Token != "" {
			if tok, ok := bearer(r); ok {
				got := sha256.Sum256([]byte(tok))
				if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
					next.ServeHTTP(w, r)
					return
				}
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
		}
		writeJSON(w, http.StatusUnauthorized, &Error{Message: "unauthenticated request to the TCP API",
			Fix: "pass --token (or TANDEM_TOKEN), a client certificate, or use the node's unix socket"})
	}), nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// ListenUnix listens on a unix socket at path that only the owner (root)
// may use: the directory is created 0700 if missing, a stale socket left
// by a previous run is removed, and the socket is made 0600. The unix
// socket is trusted: serve NewHandler's handler on it as is.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating api socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api socket %s exists and is not a socket: remove it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale api socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on api socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restricting api socket: %w", err)
	}
	return ln, nil
}
