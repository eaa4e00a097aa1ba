package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tandem-lb/tandem/node/api"
	"github.com/tandem-lb/tandem/node/api/apitest"
)

// faulty is a status source and drainer whose failures are chosen by test.
type faulty struct {
	*apitest.Status
	drainErr  error
	healthErr error
}

func (f faulty) Drain(ctx context.Context, node string) error {
	if f.drainErr != nil {
		return f.drainErr
	}
	return f.Status.Drain(ctx, node)
}

func (f faulty) Health(ctx context.Context) (map[string]api.Health, error) {
	if f.healthErr != nil {
		return nil, f.healthErr
	}
	return f.Status.Health(ctx)
}

func TestErrorStatuses(t *testing.T) {
	store := apitest.NewStore(t)
	st := apitest.NewStatus(store)
	var logs bytes.Buffer
	f := faulty{Status: st,
		drainErr:  fmt.Errorf("drain n3: %w; ask n3's own API", api.ErrMisdirected),
		healthErr: errors.New("health table unreadable")}
	h, err := api.NewHandler(api.Config{Store: store, Status: f, Drainer: f, MaxBodyBytes: 256,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"POST", "/v1/nodes/n3/drain", "", http.StatusMisdirectedRequest, "ask n3's own API"},
		{"GET", "/v1/services", "", http.StatusInternalServerError, "health table unreadable"},
		{"POST", "/v1/services", "{", http.StatusBadRequest, "decoding request body"},
		{"POST", "/v1/services", `{"name":"a","colour":"red"}`, http.StatusBadRequest, "colour"},
		{"POST", "/v1/services", `{"name":"a"} {"name":"b"}`, http.StatusBadRequest, "trailing data"},
		{"POST", "/v1/services", `{"name":"` + strings.Repeat("x", 300) + `"}`, http.StatusBadRequest, "too large"},
		{"POST", "/v1/services", `{"name":"a","ip":"10.0.0.300"}`, http.StatusBadRequest, "decoding"},
		{"GET", "/v2/everything", "", http.StatusNotFound, "no API endpoint"},
		{"PUT", "/v1/config", "", http.StatusNotFound, "no API endpoint PUT /v1/config"},
		{"GET", "/v1/vservers/none", "", http.StatusNotFound, "lb vserver none not found"},
		{"PATCH", "/v1/monitors/none", "{}", http.StatusNotFound, "lb monitor none not found"},
		{"POST", "/v1/explain", `{"src":"1.2.3.4:5","dst":"5.6.7.8:80","proto":"TCP"}`, http.StatusNotFound, "no lb vserver listens"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.contains) {
			t.Errorf("%s %s: %d %s; want %d containing %q", c.method, c.path, resp.StatusCode, body, c.status, c.contains)
		}
	}
	if !strings.Contains(logs.String(), "health table unreadable") {
		t.Errorf("the 500 was not logged: %q", logs.String())
	}
	if strings.Contains(logs.String(), "ask n3") {
		t.Errorf("a refusal was logged as a fault: %q", logs.String())
	}
	if _, err := api.NewHandler(api.Config{Store: store}); err == nil || !strings.Contains(err.Error(), "Status, Drainer") {
		t.Errorf("NewHandler without status and drainer: %v", err)
	}
}
