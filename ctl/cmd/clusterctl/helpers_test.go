package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/api/apitest"
)

const testToken = "s3cr3t-t0ken-0123456789"

// serveTLS serves h's store and status on a loopback https listener behind
// the token middleware, and returns its URL and a TLS config trusting it.
func serveTLS(t *testing.T, h *harness) (string, *tls.Config) {
	t.Helper()
	auth, err := api.Authenticate(api.AuthConfig{Token: testToken}, apitest.NewHandler(t, h.store, h.status))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(auth)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv.URL, &tls.Config{RootCAs: pool}
}

func lookBash() (string, error) { return exec.LookPath("bash") }

// completeWith runs the completion function in bash for a command line
// (the word being completed is after the last space) and returns the
// candidates.
func completeWith(t *testing.T, bash, script, line string) string {
	t.Helper()
	words := strings.Split(line, " ")
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + w + "'"
	}
	prog := "source " + script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
		itoa(len(words)-1) + "\n_clusterctl\nprintf '%s ' \"${COMPREPLY[@]}\"\n"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
	}
	return strings.TrimSpace(string(out))
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
